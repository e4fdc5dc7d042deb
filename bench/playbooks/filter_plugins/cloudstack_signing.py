"""`cs_signed_query`: a CloudStack API query string signed with an API key.

Signs the way the collection's modules sign (plugins/module_utils/cs_client.py): the
parameters sorted by name, values encoded like Java's URLEncoder, the whole string
lower-cased, HMAC-SHA1 with the secret key, Base64; signature version 3 with an
`expires` ten minutes ahead. Used by hierarchy_uri.yml.
"""

import base64
import datetime
import hashlib
import hmac
from urllib.parse import quote

EXPIRY = datetime.timedelta(minutes=10)


def _encode(value):
    return quote(str(value), safe="-_.*").replace("~", "%7E")


def cs_signed_query(params, key, secret):
    signed = {name: str(value) for name, value in params.items() if value is not None}
    expires = datetime.datetime.now(datetime.timezone.utc) + EXPIRY
    signed.update(apiKey=key, response="json", signatureVersion="3",
                  expires=expires.strftime("%Y-%m-%dT%H:%M:%S+0000"))
    query = "&".join("%s=%s" % (name, _encode(signed[name])) for name in sorted(signed))
    digest = hmac.new(secret.encode(), query.lower().encode(), hashlib.sha1).digest()
    return query + "&signature=" + _encode(base64.b64encode(digest).decode())


class FilterModule:
    def filters(self):
        return {"cs_signed_query": cs_signed_query}
