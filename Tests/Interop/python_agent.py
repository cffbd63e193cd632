"""An OpAMP agent built on the real `opentelemetry-opamp-client` (PyPI), used as an interop peer.

It connects over HTTP or HTTPS (optionally with a client certificate), applies any JSON remote config it receives by writing it to --applied,
reports APPLIED with the config's hash, and exits after --seconds (sending AgentDisconnect).
"""
import argparse
import json
import logging
import sys
import time
import uuid

from opentelemetry._opamp.agent import OpAMPAgent
from opentelemetry._opamp.callbacks import OpAMPCallbacks
from opentelemetry._opamp.client import OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2


class Callbacks(OpAMPCallbacks):
    def __init__(self, applied_path):
        self.applied_path = applied_path

    def on_message(self, agent, client, message):
        remote = message.remote_config
        if remote is None or not remote.config_hash:
            return
        try:
            configs = dict(client.decode_remote_config(remote))
            with open(self.applied_path, "w") as out:
                json.dump(configs, out, sort_keys=True)
            state = opamp_pb2.RemoteConfigStatuses.RemoteConfigStatuses_APPLIED
            error = ""
        except Exception as exc:  # report what the server sent us as FAILED
            state = opamp_pb2.RemoteConfigStatuses.RemoteConfigStatuses_FAILED
            error = str(exc)
        status = client.update_remote_config_status(remote_config_hash=remote.config_hash, status=state, error_message=error)
        if status is not None:
            agent.send(payload=client.build_remote_config_status_response_message(status))

    def on_error(self, agent, client, response):
        print("server error response:", response, file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service-name", default="python-interop")
    parser.add_argument("--applied", required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--token")
    parser.add_argument("--ca", help="CA bundle (PEM) to verify the server's certificate")
    parser.add_argument("--client-cert", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--client-key", help="its private key (PEM)")
    parser.add_argument("--instance-uid", help="the instance UID to use (the one a client certificate names)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    client = OpAMPClient(
        endpoint=args.endpoint,
        headers=headers,
        agent_identifying_attributes={"service.name": args.service_name},
        agent_non_identifying_attributes={"host.name": "interop-host"},
        tls_certificate=args.ca if args.ca else True,
        tls_client_certificate=args.client_cert,
        tls_client_key=args.client_key,
    )
    if args.instance_uid:
        # The client makes its own UID; a certificate names one, so the test gives it.
        client._instance_uid = uuid.UUID(args.instance_uid).bytes
    client.update_effective_config({"": {"sampling": "default"}}, content_type="application/json")
    agent = OpAMPAgent(interval=1, callbacks=Callbacks(args.applied), client=client)
    agent.start()
    time.sleep(args.seconds)
    agent.stop()


if __name__ == "__main__":
    main()
