"""The reviewer web app (``/app/``): server-rendered pages for the clinicians who review cases."""
