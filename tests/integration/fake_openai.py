"""The part every misbehaving fake OpenAI-compatible server in the tests shares: a quiet log and a
`/v1/models` listing with one model. A test's handler subclasses it and answers POSTs its own way."""

from __future__ import annotations

import http.server
import json


class ModelsHandler(http.server.BaseHTTPRequestHandler):
    model_id = "m"  # the one model GET /v1/models lists

    def log_message(self, *args):
        pass

    def do_GET(self):
        listing = {"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "x"}]}
        body = json.dumps(listing).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
