"""The AWS stand-in of the storage-check tests: a real moto server (PyPI `moto[server]`) on a
free loopback port, seeded over HTTP with boto3, IAM enforcement switched on.

Seed (account A is moto's default account, B a second account reached with moto's
`x-moto-account-id` header):

    A  user  compute           the compute identity, also the proxy's own identity: full access
                               to s3://datalake/datawarehouse/, may call sts:AssumeRole
    A  role  account-default   the account default role (IAM-A for users without their own):
                               read/write only under s3://datalake/defloc/ and s3://datalake/temp/;
                               trusts `compute`; may assume B's `subscriber`
    A  role  etl               a user role: read/write under s3://datalake/datawarehouse/;
                               trusts `compute`
    A  bucket datalake, bucket archive (nobody but `compute` may touch archive)
    B  bucket partner-data
    B  role  subscriber        the publisher's bucket role for subscribers: read/write
                               s3://partner-data/; trusts any principal presenting ExternalId
                               EXTERNAL_ID (the third-party pattern)

Then `POST /moto-api/reset-auth` with body `0` turns IAM enforcement on.

Known gaps of moto 5.2 (found while building this lab), and what this lab does about them:
  - Policy conditions are not evaluated for identity policies (a statement with a Condition is
    treated as a Deny), so `s3:ListBucket` is granted on the whole bucket without the
    `s3:prefix` condition a real deployment uses: read checks are per bucket here, write checks
    (s3:PutObject on `bucket/prefix/*`) are per prefix.
  - moto checks a role's trust policy only when the role lives in the caller's own account, so
    a cross-account AssumeRole would succeed whatever the ExternalId. This process runs moto
    in-process and extends that check to the account named in the role's ARN (see
    `_trust_cross_account`), so a wrong ExternalId is refused as AWS refuses it.
  - SimulatePrincipalPolicy is not implemented (HTTP 500): tests of `storage.method =
    "simulate"` use recorded responses instead.

CLI (uses the venv of tests/lab/setup.sh):
    python tests/lab/moto_lab.py run [--watch-stdin]   serve in the foreground; prints one JSON line
                                                   (the lab facts, below) once seeded; stops on
                                                   SIGTERM/SIGINT, or when stdin closes with
                                                   --watch-stdin (what the Rust tests use)
    python tests/lab/moto_lab.py start --dir DIR       the same in the background: DIR/moto.json,
                                                   DIR/moto.pid, DIR/moto.log; prints the facts
    python tests/lab/moto_lab.py stop --dir DIR

From Python: `lab = MotoLab(); facts = lab.start(); ...; lab.stop()`; `storage_toml(facts)` is a
`[storage]` section for hms-guard against it and `guard_env(facts)` the environment that gives
hms-guard the compute identity.

(Named moto_lab.py, not moto.py: the e2e tests put tests/lab on sys.path, where a moto.py would
shadow the real `moto` package.)

The facts: {"endpoint": "http://127.0.0.1:PORT", "region", "account", "partner_account",
"compute": {"arn", "access_key_id", "secret_access_key"}, "roles": {"account_default", "etl",
"subscriber"}, "external_id", "buckets": {"datalake", "archive", "partner"}}."""
import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
PARTNER_ACCOUNT = "210987654321"
EXTERNAL_ID = "partner-7f3a9c"
DATALAKE = "datalake"
ARCHIVE = "archive"
PARTNER_BUCKET = "partner-data"
START_TIMEOUT = 60  # seconds for a background `start` to print its facts

OBJECT_RW = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
             "s3:ListMultipartUploadParts"]


def _policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(actions, resources, **extra):
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def _trust_cross_account():
    """Make moto check the trust policy of a role in another account too (module docstring)."""
    from moto.iam import access_control
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    base = access_control.IAMRequestBase

    def role_in_its_account(self, role_arn):
        parts = role_arn.split(":")
        if len(parts) < 6 or not parts[4].isdigit():
            return None
        backend = iam_backends[parts[4]][get_partition(self._region)]
        try:
            return backend.get_role_by_arn(role_arn)
        except Exception:  # noqa: BLE001 - moto's NotFoundException
            return None

    def is_assuming_role_operation(self, resource_arn):
        if ":role" not in resource_arn.lower():
            return False
        if role_in_its_account(self, resource_arn) is None:
            return False
        return self._action in access_control.REQUIRE_RESOURCE_ACCESS_POLICIES_CHECK

    def check_role_trust_relationship(self, role_arn):
        role = role_in_its_account(self, role_arn)
        if role is None:
            return False
        policy = access_control.IAMPolicy(role.assume_role_policy_document)
        result = policy.is_action_permitted(
            self._action, role_arn, self._access_key.arn,
            access_control.format_incoming_conditional_values(self._data))
        return result == access_control.PermissionResult.PERMITTED

    for name in ("_is_assuming_role_operation", "_check_role_trust_relationship",
                 "check_action_permitted"):
        if not hasattr(base, name):
            raise SystemExit(f"moto layout changed: IAMRequestBase.{name} is missing; "
                             f"revisit _trust_cross_account for this moto version")
    base._is_assuming_role_operation = is_assuming_role_operation
    base._check_role_trust_relationship = check_role_trust_relationship


def _client(boto3, service, endpoint, account=None):
    c = boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                     aws_access_key_id="seed", aws_secret_access_key="seed")
    if account:
        def add_account(request, **_):
            request.headers["x-moto-account-id"] = account
        c.meta.events.register("before-sign.*.*", add_account)
    return c


def seed(endpoint):
    """Creates the users, roles, policies and buckets (IAM enforcement still off)."""
    import boto3

    iam = _client(boto3, "iam", endpoint)
    s3 = _client(boto3, "s3", endpoint)
    iam_b = _client(boto3, "iam", endpoint, PARTNER_ACCOUNT)
    s3_b = _client(boto3, "s3", endpoint, PARTNER_ACCOUNT)

    for b in (DATALAKE, ARCHIVE):
        s3.create_bucket(Bucket=b)
    s3_b.create_bucket(Bucket=PARTNER_BUCKET)

    compute = iam.create_user(UserName="compute")["User"]
    iam.put_user_policy(UserName="compute", PolicyName="compute", PolicyDocument=_policy(
        _allow("s3:*", [f"arn:aws:s3:::{DATALAKE}/datawarehouse/*",
                        f"arn:aws:s3:::{ARCHIVE}", f"arn:aws:s3:::{ARCHIVE}/*"]),
        _allow("s3:ListBucket", f"arn:aws:s3:::{DATALAKE}"),
        _allow("sts:AssumeRole", "*"),
    ))
    key = iam.create_access_key(UserName="compute")["AccessKey"]

    trust_compute = _policy({"Effect": "Allow", "Principal": {"AWS": compute["Arn"]},
                             "Action": "sts:AssumeRole"})
    subscriber_arn = f"arn:aws:iam::{PARTNER_ACCOUNT}:role/subscriber"

    default = iam.create_role(RoleName="account-default",
                              AssumeRolePolicyDocument=trust_compute)["Role"]
    iam.put_role_policy(RoleName="account-default", PolicyName="defloc-temp",
                        PolicyDocument=_policy(
        _allow(OBJECT_RW, [f"arn:aws:s3:::{DATALAKE}/defloc/*",
                           f"arn:aws:s3:::{DATALAKE}/temp/*"]),
        # A real deployment adds Condition StringLike s3:prefix [defloc/*, temp/*]; moto would
        # treat the conditioned statement as a Deny (module docstring).
        _allow("s3:ListBucket", f"arn:aws:s3:::{DATALAKE}"),
        _allow("sts:AssumeRole", subscriber_arn),
    ))

    etl = iam.create_role(RoleName="etl", AssumeRolePolicyDocument=trust_compute)["Role"]
    iam.put_role_policy(RoleName="etl", PolicyName="warehouse", PolicyDocument=_policy(
        _allow(OBJECT_RW, f"arn:aws:s3:::{DATALAKE}/datawarehouse/*"),
        _allow("s3:ListBucket", f"arn:aws:s3:::{DATALAKE}"),
    ))

    subscriber = iam_b.create_role(RoleName="subscriber", AssumeRolePolicyDocument=_policy({
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
    }))["Role"]
    iam_b.put_role_policy(RoleName="subscriber", PolicyName="partner-data",
                          PolicyDocument=_policy(
        _allow(OBJECT_RW, f"arn:aws:s3:::{PARTNER_BUCKET}/*"),
        _allow("s3:ListBucket", f"arn:aws:s3:::{PARTNER_BUCKET}"),
    ))
    assert subscriber["Arn"] == subscriber_arn, subscriber["Arn"]

    return {
        "endpoint": endpoint,
        "region": REGION,
        "account": ACCOUNT,
        "partner_account": PARTNER_ACCOUNT,
        "compute": {"arn": compute["Arn"], "access_key_id": key["AccessKeyId"],
                    "secret_access_key": key["SecretAccessKey"]},
        "roles": {"account_default": default["Arn"], "etl": etl["Arn"],
                  "subscriber": subscriber["Arn"]},
        "external_id": EXTERNAL_ID,
        "buckets": {"datalake": DATALAKE, "archive": ARCHIVE, "partner": PARTNER_BUCKET},
    }


def guard_env(facts):
    """Environment for an hms-guard process whose own AWS identity is the compute user (the
    default credential chain reads it); instance metadata is switched off so nothing leaves
    loopback."""
    return {
        "AWS_ACCESS_KEY_ID": facts["compute"]["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": facts["compute"]["secret_access_key"],
        "AWS_REGION": facts["region"],
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def storage_toml(facts, user_roles=None, external_id=None, **extra):
    """A `[storage]` section for hms-guard against this lab: the account default role for
    everyone, `user_roles` (user → "account_default" | "etl" | a role ARN), the partner bucket
    mapped to the subscriber role (with `external_id`, default the right one); `extra` keys
    are written as they are (ints, strings, booleans)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return json.dumps(str(v))

    roles = facts["roles"]
    lines = ["[storage]",
             f"endpoint_url = {val(facts['endpoint'])}",
             f"region = {val(facts['region'])}",
             f"default_role = {val(roles['account_default'])}"]
    lines += [f"{k} = {val(v)}" for k, v in extra.items()]
    lines.append("[storage.user_roles]")
    for user, role in (user_roles or {}).items():
        lines.append(f"{json.dumps(user)} = {val(roles.get(role, role))}")
    lines.append(f"[storage.buckets.{json.dumps(facts['buckets']['partner'])}]")
    lines.append(f"role_arn = {val(roles['subscriber'])}")
    lines.append(f"external_id = {val(external_id or facts['external_id'])}")
    return "\n".join(lines) + "\n"


def _moto_api(endpoint, path, body):
    req = urllib.request.Request(f"{endpoint}/moto-api/{path}", data=body, method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 200:
            raise RuntimeError(f"{path} answered {r.status}")


def enforce_iam(endpoint):
    _moto_api(endpoint, "reset-auth", b"0")


def fresh_moto(endpoint):
    """moto keeps its accounts and its IAM enforcement switch per process, not per server: a
    second server in the same test process starts with the first one's state. Forget it all and
    turn enforcement off, so the seed can run."""
    _moto_api(endpoint, "reset", b"")
    _moto_api(endpoint, "reset-auth", b"inf")


class MotoLab:
    """A moto server in this process (a werkzeug thread), seeded, IAM enforcement on."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host, self.port = host, port
        self.server = None
        self.facts = None

    def start(self):
        os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        _trust_cross_account()
        self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        fresh_moto(endpoint)
        self.facts = seed(endpoint)
        enforce_iam(endpoint)
        return self.facts

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


def _run(args):
    lab = MotoLab(port=args.port)
    try:
        facts = lab.start()
    except Exception as e:  # noqa: BLE001 - report any failure to start on one line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(facts), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.watch_stdin:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            done.set()
        threading.Thread(target=watch, daemon=True).start()
    while not done.wait(0.5):
        pass
    lab.stop()
    return 0


def _start(args):
    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    log = open(d / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run",
                             "--port", str(args.port)],
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line:
            break
    facts = json.loads(line or b'{"error": "moto exited or timed out before it was ready"}')
    if "error" in facts:
        proc.kill()
        print(f"moto lab: {facts['error']} (log: {d / 'moto.log'})", file=sys.stderr)
        return 1
    (d / "moto.pid").write_text(str(proc.pid))
    (d / "moto.json").write_text(json.dumps(facts, indent=2))
    print(json.dumps(facts))
    return 0


def _stop(args):
    pid_file = Path(args.dir) / "moto.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="serve in the foreground")
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--watch-stdin", action="store_true",
                   help="stop when standard input reaches end of file")
    s = sub.add_parser("start", help="serve in the background")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, default=0)
    t = sub.add_parser("stop", help="stop a background server")
    t.add_argument("--dir", required=True)
    args = p.parse_args()
    return {"run": _run, "start": _start, "stop": _stop}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
