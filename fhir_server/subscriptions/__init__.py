"""FHIR R4 Subscriptions (subscription.html) that really deliver.

- ``activation``: a Subscription written by a client is checked (criteria is a search URL the
  client may run, a supported channel) and goes ``requested -> active``, stamped with its owner.
- ``owner``: who created it (client id, scopes, launch patient), kept in a server-managed extension;
  matches are evaluated with that owner's ``AccessPolicy``, never with more.
- ``worker``: an outbox consumer that evaluates criteria on commit and delivers through ``channels``;
  websocket matches go to the ``feed``, which the process holding the socket reads.
- ``websocket`` (the endpoint and its authentication), ``sockets`` (one socket's bind/ping protocol,
  caps and timeouts) and ``binding`` (who may bind what): the R4 websocket channel.
"""
