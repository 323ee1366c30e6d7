#!/usr/bin/python3
"""A strict stand-in for Keylime's registrar and verifier (REST API 2.x), or
a webhook sink, over HTTPS on loopback, for vtpmd's enroll tests.

usage: keylime_stub.py DIR keylime|sink --cert C --key K [--client-ca CA] [--status FILE]

Writes DIR/<name>.port for each server (registrar, verifier; or sink) and
appends one JSON line per request to DIR/calls.log.  DIR/control.json, read
at every request, scripts failures:
  {"fail": {"verifier POST": 503, "sink": 302}, "refuse_until": <unix time>,
   "huge": true, "garbage": {"registrar GET": "text" or "huge"}}
"""
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/v2.6/agents/"
LOCK = threading.RLock()
REG = {}        # uuid -> registrar record
CV = {}         # uuid -> verifier record


def control(d):
    try:
        with open(os.path.join(d, "control.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def active_instance(path):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)["active"]["instance"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Handler(BaseHTTPRequestHandler):
    side = "?"
    args = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def record(self, status, extra=None):
        line = {"t": time.time(), "side": self.side, "method": self.command,
                "path": self.path, "status": status,
                "active": active_instance(self.args["status"])}
        line.update(extra or {})
        with LOCK, open(os.path.join(self.args["dir"], "calls.log"), "a") as f:
            f.write(json.dumps(line) + "\n")

    def reply(self, status, results=None, raw=None, extra=None):
        self.record(status, extra)
        body = raw if raw is not None else json.dumps(
            {"code": status, "status": "Success" if status < 300 else "Error",
             "results": results if results is not None else {}}).encode()
        self.send_response(status)
        if status in (301, 302, 307):
            self.send_header("Location", "https://127.0.0.1:1/elsewhere")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            return None
        data = self.rfile.read(n)
        try:
            return json.loads(data) if data else None
        except ValueError:
            return "not json"

    def handle_any(self):
        ctl = control(self.args["dir"])
        body = self.body() if self.command == "POST" else None
        code = ctl.get("fail", {}).get(self.side if self.side == "sink"
                                       else self.side + " " + self.command)
        if ctl.get("refuse_until", 0) > time.time():
            code = 503
        if code:
            return self.reply(code, extra={"scripted": True})
        junk = ctl.get("garbage", {}).get(self.side + " " + self.command)
        if junk:
            raw = b"x" * (2 << 20) if junk == "huge" else b"<html>not json</html>"
            return self.reply(200, raw=raw, extra={"scripted": True})
        if self.side == "sink":
            return self.sink(body, ctl)
        if not self.path.startswith(API):
            return self.reply(404)
        rest = self.path[len(API):].split("/")
        with LOCK:
            if self.side == "registrar":
                return self.registrar(rest, body)
            return self.verifier(rest[0], body)

    do_GET = do_POST = do_DELETE = handle_any

    def sink(self, ev, ctl):
        if self.headers.get("Content-Type") != "application/json" or not isinstance(ev, dict):
            return self.reply(400)
        extra = {"id": ev.get("id"), "phase": ev.get("phase"), "reason": ev.get("reason"),
                 "new": (ev.get("new") or {}).get("instance"),
                 "auth": self.headers.get("Authorization")}
        if ctl.get("huge"):
            return self.reply(200, raw=b"x" * (2 << 20), extra=extra)
        return self.reply(200, extra=extra)

    def registrar(self, rest, body):
        uuid = rest[0]
        agent = REG.get(uuid)
        if self.command == "GET":
            if not agent or not agent["active"]:
                return self.reply(404)
            res = {k: agent[k] for k in ("aik_tpm", "ek_tpm", "ekcert", "mtls_cert", "ip", "port")}
            res["regcount"] = agent["regcount"]
            return self.reply(200, res)
        if self.command == "DELETE":
            if not agent:
                return self.reply(404)
            del REG[uuid]
            return self.reply(200)
        if len(rest) > 1 and rest[1] == "activate":
            if not agent or not isinstance(body, dict) or not body.get("auth_tag"):
                return self.reply(404 if not agent else 400)
            agent["active"] = True
            return self.reply(200)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str)
                                                 for k in ("ek_tpm", "aik_tpm")):
            return self.reply(400)
        ident = (body["ek_tpm"], body.get("ekcert"), body["aik_tpm"])
        if agent and (agent["ek_tpm"], agent["ekcert"], agent["aik_tpm"]) != ident:
            return self.reply(403)
        rec = {"ek_tpm": ident[0], "ekcert": ident[1], "aik_tpm": ident[2],
               "mtls_cert": body.get("mtls_cert"), "ip": body.get("ip"),
               "port": body.get("port"), "active": False,
               "regcount": (agent["regcount"] + 1) if agent else 1}
        REG[uuid] = rec
        return self.reply(200, {"blob": "challenge"})

    def verifier(self, uuid, body):
        agent = CV.get(uuid)
        now = time.time()
        if agent and agent.get("gone_at") and agent["gone_at"] <= now:
            del CV[uuid]
            agent = None
        if self.command == "DELETE":
            if not agent:
                return self.reply(404)
            agent["state"] = 8
            agent["gone_at"] = now + 0.6
            return self.reply(202)
        if self.command == "GET":
            if not agent:
                return self.reply(404)
            count = 1 if agent["state"] == 3 and now >= agent["quote_at"] else 0
            return self.reply(200, {"operational_state": agent["state"],
                                    "attestation_count": count})
        if agent:
            return self.reply(409)
        why = check_add(body, REG.get(uuid))
        if why:
            return self.reply(400, extra={"why": why})
        CV[uuid] = {"state": 3, "quote_at": now + 0.5}
        return self.reply(200)


def check_add(b, reg):
    if not isinstance(b, dict):
        return "body is not a JSON object"
    for k, t in (("cloudagent_ip", str), ("tpm_policy", str), ("ak_tpm", str),
                 ("supported_version", str), ("accept_tpm_hash_algs", list),
                 ("accept_tpm_encryption_algs", list), ("accept_tpm_signing_algs", list),
                 ("metadata", str), ("revocation_key", str)):
        if not isinstance(b.get(k), t):
            return "missing or mistyped " + k
    for k in ("v", "mtls_cert", "runtime_policy", "runtime_policy_name", "mb_policy",
              "mb_policy_name", "ima_sign_verification_keys", "cloudagent_port"):
        if k not in b:
            return "missing " + k
    if not isinstance(json.loads(b["tpm_policy"]), dict):
        return "tpm_policy is not a JSON object"
    if not reg or not reg["active"] or reg["aik_tpm"] != b["ak_tpm"]:
        return "ak_tpm is not the registrar's"
    return None


def serve(name, side, args):
    cls = type(name, (Handler,), {"side": side, "args": args})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), cls)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args["cert"], args["key"])
    if args["client_ca"]:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args["client_ca"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port_file = os.path.join(args["dir"], name + ".port")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def main():
    a = sys.argv[1:]
    args = {"dir": a[0], "mode": a[1], "cert": None, "key": None, "client_ca": None,
            "status": None}
    i = 2
    while i < len(a):
        args[a[i][2:].replace("-", "_")] = a[i + 1]
        i += 2
    if args["mode"] == "sink":
        serve("sink", "sink", args)
    else:
        serve("registrar", "registrar", args)
        serve("verifier", "verifier", args)
    threading.Event().wait()


if __name__ == "__main__":
    main()
