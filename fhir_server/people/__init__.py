"""Sign-in for people (SMART App Launch 2.x, app-launch.html): the built-in user directory, browser
sessions, the authorization endpoint with its login and consent pages, and the authorization-code and
refresh-token grants of the token endpoint. :mod:`fhir_server.people.signed_in` is what web pages use."""
