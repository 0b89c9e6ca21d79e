"""The command line: ``python -m flowlab sandbox|import|call|batch|edge`` (design.md, "The CLI contract").

Without ``--base-url`` (or ``FLOWLAB_BASE_URL`` / ``FLOWLAB_REGION``; ``FLOWLAB_EDGE_BASE_URL`` for ``edge``),
``call``, ``batch`` and ``edge`` start a sandbox in-process and use its demo client key (for ``edge``: its
demo datastream and IMS credentials), so every command works offline. Bad input gets one line on stderr
that says what to fix and a non-zero exit (2 for usage, 1 for API failures); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowlab import __version__
from flowlab.admin import SandboxAdmin
from flowlab.config import REGIONS, Settings, load_settings, resolve_base_url
from flowlab.edge import EdgeClient, EdgeCredentials, InteractRequest
from flowlab.edge.response import edge_status_error
from flowlab.errors import ConfigError, FlowLabError, RequestValidationError, RunStoreError, SampleError
from flowlab.http import status_error
from flowlab.personalize.client import FlowClient
from flowlab.personalize.models import CHANNELS, CallFlowRequest

__all__ = ["main", "parse_params"]

EXIT_API = 1
EXIT_USAGE = 2


class UsageError(FlowLabError):
    """A command-line mistake (exit 2)."""


def parse_params(
    pairs: Sequence[str], *, flag: str = "--param", example: str = "utm.campaign=spring_trail"
) -> dict[str, Any]:
    """``KEY=VALUE`` pairs into params. Dotted keys nest (``utm.campaign=x``); JSON values are parsed.

    ``flag`` and ``example`` only shape the error messages, so ``edge --data`` shares this parser.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} '{pair}' must look like KEY=VALUE, e.g. {example}")
        try:
            value: Any = json.loads(raw)
            if not isinstance(value, dict | list | int | float | bool) or value is None:
                value = raw
        except ValueError:
            value = raw
        node = params
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{flag} '{pair}' conflicts with an earlier {flag} {part}=…")
            node = child
        node[parts[-1]] = value
    return params


def _identifier(value: str) -> dict[str, str]:
    provider, sep, ident = value.partition(":")
    if not sep or not provider or not ident:
        raise UsageError(f"--identifier '{value}' must look like PROVIDER:ID, e.g. LOYALTY:LY-1042")
    return {"provider": provider, "id": ident}


@contextmanager
def _target(args: argparse.Namespace, settings: Settings) -> Iterator[tuple[str, str]]:
    """(base_url, client_key): the given tenant, or a sandbox started just for this command."""
    base_url = resolve_base_url(base_url=args.base_url) or settings.target_url
    client_key = args.client_key or settings.client_key
    if base_url is not None:
        if not client_key:
            raise UsageError("--client-key is required with --base-url (or set FLOWLAB_CLIENT_KEY)")
        yield base_url, client_key
        return
    from flowlab.sandbox import SandboxServer

    with SandboxServer(
        latency_ms=settings.sandbox_latency_ms, faults=settings.sandbox_faults or None
    ) as sandbox:
        yield sandbox.url, client_key or sandbox.client_key


def _request_fields(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    identities = [x for x in (args.browser_id, args.email, args.identifier) if x]
    if len(identities) > 1:
        raise UsageError("use only one of --browser-id, --email or --identifier")
    if not identities:
        raise UsageError("say who the guest is: --browser-id X, --email E or --identifier PROVIDER:ID")
    fields: dict[str, Any] = {
        "friendlyId": args.friendly_id,
        "channel": args.channel or settings.channel,
        "pointOfSale": args.pos if args.pos is not None else settings.point_of_sale,
        "language": args.language or settings.language,
        "currencyCode": args.currency or settings.currency,
        "params": parse_params(args.param or []),
    }
    if args.browser_id:
        fields["browserId"] = args.browser_id
    elif args.email:
        fields["email"] = args.email
    else:
        fields["identifiers"] = _identifier(args.identifier)
    return fields


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from flowlab.sandbox import DEMO_CLIENT_KEY
    from flowlab.sandbox.faults import parse_faults, parse_latency
    from flowlab.sandbox.server import serve_forever

    try:
        parse_latency(args.latency_ms)
        parse_faults(args.faults)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for folder in args.load:
        if not Path(folder).is_dir():
            raise UsageError(f"--load {folder}: not a folder; give a Sitecore export folder")
    routes = _connection_routes(args.connection)
    if args.connections_to or routes:
        from flowlab.sandbox.personalize.connections import Routes

        try:
            Routes(connections_to=args.connections_to, overrides=routes)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def announce(url: str) -> None:
        sys.stderr.write(
            f"Flow Lab sandbox on {url}  (client key: {DEMO_CLIENT_KEY})\n"
            f"  try: python -m flowlab call --base-url {url} --client-key {DEMO_CLIENT_KEY} "
            "--friendly-id checkout_ab_test --browser-id demo-1\n"
            f"  admin API docs: {url}/sandbox/docs   (Ctrl+C stops)\n"
        )

    serve_forever(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        faults=args.faults,
        announce=announce,
        admin_token=args.admin_token or settings.sandbox_admin_token,
        replay=args.replay,
        replay_latency=args.replay_latency,
        load=args.load,
        connections_to=args.connections_to,
        connection_routes=routes,
    )
    return 0


def _connection_routes(specs: list[str]) -> dict[str, str]:
    """``--connection NAME_OR_REF=URL`` flags as a mapping (the last '=' followed by http splits them)."""
    routes: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.rpartition("=http")
        if not sep or not name.strip():
            raise UsageError(
                f'--connection {spec!r}: write NAME_OR_REF=URL, e.g. --connection "Get City from MaxMind=http://127.0.0.1:9000"'
            )
        routes[name.strip()] = "http" + url
    return routes


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Zip an export folder and load it into a sandbox; exit 1 when a definition was skipped (#11)."""
    from flowlab.sandbox.personalize.importer import DEFINITION_KINDS, report_table, zip_folder

    if not Path(args.folder).is_dir():
        raise UsageError(f"{args.folder}: not a folder; give a Sitecore export folder")
    archive = zip_folder(args.folder)
    base_url = resolve_base_url(base_url=args.base_url) or settings.target_url
    if base_url is not None:
        with SandboxAdmin(base_url=base_url) as admin:
            report = admin.import_export(archive)
    else:  # no sandbox given: check the folder against one started for this command
        from flowlab.sandbox import SandboxServer

        with SandboxServer() as sandbox, SandboxAdmin(base_url=sandbox.url) as admin:
            report = admin.import_export(archive)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(report_table(report, all_files=args.all_files) + "\n")
    skipped = [
        i for i in report.get("items", []) if i["status"] == "skipped" and i["kind"] in DEFINITION_KINDS
    ]
    return EXIT_API if skipped else 0


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    fields = _request_fields(args, settings)
    # validate before starting anything, so a typo costs no sandbox start-up
    request = CallFlowRequest.build(clientKey=args.client_key or settings.client_key or "-", **fields)
    with _target(args, settings) as (base_url, client_key):
        request = request.model_copy(update={"client_key": client_key})
        with FlowClient(
            base_url=base_url,
            timeout=args.timeout or settings.timeout,
            retries=settings.retries if args.retries is None else args.retries,
        ) as client:
            response = client.call(request, raise_for_status=False)
    if args.verbose:
        sys.stderr.write(f"{response.status_code} in {response.latency_ms:.0f} ms from {response.url}\n")
        for key, value in response.headers.items():
            sys.stderr.write(f"{key}: {value}\n")
    sys.stdout.write(response.text + ("\n" if not response.text.endswith("\n") else ""))
    if not response.ok:
        sys.stderr.write(f"error: {status_error(response)}\n")
        return EXIT_API
    return 0


def cmd_batch(args: argparse.Namespace, settings: Settings) -> int:
    from flowlab.batch.runner import BatchOptions
    from flowlab.batch.samples import read_guests

    if args.provider == "personalize" and not args.friendly_id:
        raise UsageError("--friendly-id is required (the flow to call), or pass --provider edge")
    if args.simulate and args.provider != "personalize":
        raise UsageError("--simulate runs a sandbox callFlows flow in any status: leave out --provider edge")
    sample = read_guests(Path(args.guests))
    if sample.problems:
        for problem in sample.problems[:20]:
            sys.stderr.write(f"{args.guests}: {problem}\n")
        more = len(sample.problems) - 20
        if more > 0:
            sys.stderr.write(f"… and {more} more problems\n")
        if not sample.guests:
            raise UsageError(f"{args.guests}: no usable guest rows")
        sys.stderr.write(f"skipping {len(sample.problems)} bad rows; running {len(sample.guests)} guests\n")
    if args.provider == "edge":
        return _edge_batch(args, settings, sample)
    with _target(args, settings) as (base_url, client_key):
        options = BatchOptions(
            base_url=base_url,
            client_key=client_key,
            friendly_id=args.friendly_id,
            defaults={
                "channel": args.channel or settings.channel,
                "pointOfSale": args.pos if args.pos is not None else settings.point_of_sale,
                "language": args.language or settings.language,
                "currencyCode": args.currency or settings.currency,
            },
            concurrency=args.concurrency,
            rps=args.rps,
            retries=args.retries,
            timeout=args.timeout or settings.timeout,
            variant_path=args.variant_path,
            simulate=args.simulate,
        )
        options.check_target()  # --simulate: a sandbox only, refused before anything is asked or called
        _confirm_live_batch(
            base_url, len(sample.guests), settings.batch_confirm_threshold, assume_yes=args.yes
        )
        summary = _run_to_file(args, sample, options)
    sys.stderr.write(summary.describe() + "\n")
    return 0 if summary.failed == 0 else EXIT_API


def _run_to_file(args: argparse.Namespace, sample: Any, options: Any) -> Any:
    """Run the batch into ``--out``; a resume first says how many guests were in flight at the stop (#8)."""
    from flowlab.batch.runner import resume_state, run_batch_to_file, store_path_for

    if args.resume:
        state = resume_state(store_path_for(args.out))
        if state is not None:
            sys.stderr.write(state.describe() + "\n")
    return run_batch_to_file(sample, options, Path(args.out), resume=args.resume, progress=not args.quiet)


def _edge_batch(args: argparse.Namespace, settings: Settings, sample: Any) -> int:
    """``batch --provider edge``: the sample against AEP Edge interact (a sandbox's demo credentials unless
    ``--no-auth``; on a live org ``FLOWLAB_EDGE_*``)."""
    from flowlab.batch.runner import BatchOptions, store_path_for

    if sample.provider != "edge":  # refused before any sandbox starts or anything is called
        raise UsageError(
            f"{args.guests} is a callFlows guest CSV: an Edge batch needs identity.namespace and identity.id "
            "columns (optional eventType, data.*, xdm.*)"
        )
    dimensions = ["identity", "event_type", *sample.columns]
    if args.by is not None and args.by not in dimensions:
        raise UsageError(
            f"--by {args.by}: not a column of {args.guests}; pick one of: {', '.join(dimensions)}"
        )
    with _edge_target(args, settings) as (base_url, provider):
        _confirm_live_batch(
            base_url, len(sample.guests), settings.batch_confirm_threshold, assume_yes=args.yes
        )
        options = BatchOptions(
            base_url=base_url,
            provider=provider,
            concurrency=args.concurrency,
            rps=args.rps,
            retries=args.retries,
            timeout=args.timeout or settings.timeout,
        )
        summary = _run_to_file(args, sample, options)
        sys.stderr.write(summary.describe() + "\n")
        _print_membership(store_path_for(args.out), base_url, args.by)
    return 0 if summary.failed == 0 else EXIT_API


def _print_membership(store: Path, base_url: str, by: str | None) -> None:
    """After an Edge batch: each audience's share of the answered identities, with a 95% Wilson interval,
    overall or per value of ``--by`` (audience names when the target is a sandbox)."""
    from flowlab.analysis.membership import membership_rates
    from flowlab.batch.runs import RunStore

    with RunStore.open(store) as run:
        frame = run.to_dataframe(exclude=("body",))
    names: list[dict[str, Any]] = []
    with SandboxAdmin(base_url=base_url, timeout=5) as admin:
        if admin.is_sandbox():
            names = admin.edge_audiences()
    rates = membership_rates(frame, by=by, audiences=names or None)
    rates = rates[rates["members"] > 0] if by else rates
    if rates.empty:
        sys.stdout.write("no audience membership in the answered calls\n")
        return
    lines = [f"audience membership{f' by {by}' if by else ''} (share of answered identities, 95% interval):"]
    width = min(max(len(str(n)) for n in rates["name"]), 40)
    level_width = max((len(str(v)) for v in rates[by]), default=0) if by else 0
    for row in rates.to_dict("records"):
        level = f"{str(row[by]):<{level_width}}  " if by else ""
        lines.append(
            f"  {level}{str(row['name'])[:40]:<{width}}  {row['members']:>7,} / {row['guests']:<7,} "
            f"{row['rate']:>6.1%}  [{row['rate_low']:.1%}, {row['rate_high']:.1%}]"
        )
    sys.stdout.write("\n".join(lines) + "\n")


@contextmanager
def _edge_target(args: argparse.Namespace, settings: Settings) -> Iterator[tuple[str, Any]]:
    """(base_url, EdgeProvider): a sandbox started for this command, a sandbox given by URL (its demo
    credentials), or a live Edge with the ``FLOWLAB_EDGE_*`` settings."""
    from flowlab.edge.provider import EdgeProvider

    auth = not args.no_auth
    base_url = args.base_url or settings.edge_base_url
    if base_url is None:
        from flowlab.sandbox import SandboxServer

        with SandboxServer(
            latency_ms=settings.sandbox_latency_ms, faults=settings.sandbox_faults or None
        ) as sb:
            yield (
                sb.url,
                EdgeProvider.for_sandbox(sb.url, authenticated=auth, datastream=args.datastream_id or 0),
            )
        return
    url = resolve_base_url(base_url=base_url) or base_url
    if EdgeCredentials.from_settings(settings) is None:
        with SandboxAdmin(base_url=url, timeout=5) as admin:
            on_sandbox = admin.is_sandbox()
        if on_sandbox:
            yield url, EdgeProvider.for_sandbox(url, authenticated=auth, datastream=args.datastream_id or 0)
            return
        if auth:
            sys.stderr.write(
                "note: no FLOWLAB_EDGE_CLIENT_ID / FLOWLAB_EDGE_CLIENT_SECRET: sending the unauthenticated "
                "call (audiences only, no attributes)\n"
            )
    yield url, EdgeProvider.from_settings(settings, datastream_id=args.datastream_id, authenticated=auth)


DEMO_IDENTITY = "Email:lena.vogel@example.de"


def _interact_request(args: argparse.Namespace) -> InteractRequest:
    """The event from the flags, validated before any sandbox starts or any token is fetched."""
    if not args.identity:
        raise UsageError(f"say who the visitor is: --identity NAMESPACE:ID, e.g. {DEMO_IDENTITY}")
    namespace, sep, ident = args.identity.partition(":")
    if not sep or not namespace.strip() or not ident.strip():
        raise UsageError(
            f"--identity '{args.identity}' must look like NAMESPACE:ID (ECID, Email, CRMID, Phone or your "
            f"custom namespace code), e.g. {DEMO_IDENTITY}"
        )
    return InteractRequest.build(
        identity=(namespace.strip(), ident.strip()),
        event_type=args.event_type,
        page_url=args.page_url,
        data=parse_params(args.data or [], flag="--data", example="cart.value=129.9"),
    )


@contextmanager
def _edge_client(args: argparse.Namespace, settings: Settings) -> Iterator[EdgeClient]:
    """The Edge to call: the given one (credentials from ``FLOWLAB_EDGE_*``), a running sandbox given by
    URL (its demo credentials when none are configured), or a sandbox started just for this command."""
    base_url = args.base_url or settings.edge_base_url
    timeout = settings.timeout
    if base_url is None:
        from flowlab.sandbox import SandboxServer

        with (
            SandboxServer(
                latency_ms=settings.sandbox_latency_ms, faults=settings.sandbox_faults or None
            ) as sb,
            EdgeClient.for_sandbox(
                sb.url, authenticated=not args.no_auth, datastream=args.datastream_id or 0, timeout=timeout
            ) as client,
        ):
            yield client
        return
    credentials = None if args.no_auth else EdgeCredentials.from_settings(settings)
    datastream = args.datastream_id or settings.edge_datastream_id
    if credentials is None:  # a sandbox given by URL brings its own datastream and demo credentials
        url = resolve_base_url(base_url=base_url) or base_url
        with SandboxAdmin(base_url=url, timeout=5) as admin:
            on_sandbox = admin.is_sandbox()
        if on_sandbox:
            with EdgeClient.for_sandbox(
                url, authenticated=not args.no_auth, datastream=datastream or 0, timeout=timeout
            ) as client:
                yield client
            return
        if not args.no_auth:
            sys.stderr.write(
                "note: no FLOWLAB_EDGE_CLIENT_ID / FLOWLAB_EDGE_CLIENT_SECRET: sending the unauthenticated "
                "call (audiences only, no attributes)\n"
            )
    if not datastream and "/interact" not in base_url:  # a pasted interact URL carries its own
        raise UsageError("--datastream-id is required with --base-url (or set FLOWLAB_EDGE_DATASTREAM_ID)")
    with EdgeClient(
        base_url=base_url,
        datastream_id=datastream,
        credentials=credentials,
        region=settings.edge_region,
        timeout=timeout,
        retries=settings.retries,
    ) as client:
        yield client


def _one_line(text: str) -> str:
    return " ".join(text.split())


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    """Write a sample CSV for ``batch``: synthetic guests (callFlows), or identities from a sandbox's edge
    profiles plus first-time visitors (AEP Edge; a sandbox started for this command without ``--base-url``)."""
    from flowlab.batch.samples import edge_sample_from_sandbox, generate_guests

    if args.size < 1:
        raise UsageError(f"--size must be 1 or more, got {args.size}")
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise UsageError(f"--out {args.out}: a sample is a .csv file")
    if args.provider == "personalize":
        if args.event_type:
            raise UsageError("--event-type is for --provider edge")
        sample = generate_guests(args.size, seed=args.seed)
    elif args.base_url:
        sample = edge_sample_from_sandbox(
            args.base_url, limit=args.size, event_type=args.event_type, seed=args.seed
        )
    else:
        from flowlab.sandbox import SandboxServer

        with SandboxServer() as sb:
            sample = edge_sample_from_sandbox(
                sb.url, limit=args.size, event_type=args.event_type, seed=args.seed
            )
    sample.to_csv(out)
    noun = "identities" if args.provider == "edge" else "guests"
    sys.stderr.write(f"{len(sample.guests):,} {noun} in {out} (columns: {', '.join(sample.header())})\n")
    return 0


def cmd_edge(args: argparse.Namespace, settings: Settings) -> int:
    request = _interact_request(args)
    with _edge_client(args, settings) as client:
        response = client.interact(request, raise_for_status=False)
    if args.verbose:
        auth = "authenticated" if client.authenticated else "unauthenticated"
        sys.stderr.write(
            f"{response.status_code} in {response.latency_ms:.0f} ms from {response.url} ({auth})\n"
        )
        for key, value in response.headers.items():
            sys.stderr.write(f"{key}: {value}\n")
        # what was sent, so --data and --page-url can be checked; the body never holds the token
        sys.stderr.write("sent: " + request.body_bytes(client.version).decode() + "\n")
    body = response.json_body
    text = json.dumps(body, indent=2, ensure_ascii=False) if body is not None else response.text
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    if not response.ok:
        sys.stderr.write(f"error: {_one_line(str(edge_status_error(response)))}\n")
        return EXIT_API
    for problem in response.errors:
        sys.stderr.write(f"warning: the Edge reported {_one_line(str(problem))}\n")
    return 0


def _confirm_live_batch(base_url: str, guests: int, threshold: int, *, assume_yes: bool) -> None:
    """On a live tenant every call is a tracking event in someone's analytics: big batches need a yes."""
    if assume_yes or guests <= threshold:
        return
    with SandboxAdmin(base_url=base_url, timeout=5) as admin:
        if admin.is_sandbox():
            return
    question = (
        f"{guests:,} calls to {base_url}: each writes a tracking event into that tenant's analytics. "
        "Go ahead? [y/N] "
    )
    if not sys.stdin.isatty():
        raise UsageError(
            f"{guests:,} guests is over FLOWLAB_BATCH_CONFIRM_THRESHOLD ({threshold:,}) on a live tenant: "
            "pass --yes to confirm"
        )
    sys.stderr.write(question)
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
        raise UsageError("not confirmed; nothing was called")


def _add_target(p: argparse.ArgumentParser, *, friendly_required: bool = True) -> None:
    p.add_argument("--base-url", help="tenant base URL (default: a sandbox started for this command); "
                   f"regions: {', '.join(REGIONS.values())}")  # fmt: skip
    p.add_argument("--client-key", help="the tenant's client key (default: the sandbox's demo key)")
    p.add_argument(
        "--friendly-id",
        required=friendly_required,
        help="the flow's friendlyId; a trailing * matches by prefix",
    )
    p.add_argument("--channel", type=str.upper, choices=CHANNELS, help="channel (default WEB)")
    p.add_argument("--pos", help="point of sale, e.g. lumen/de")
    p.add_argument("--language", help="ISO 639 language code, e.g. EN")
    p.add_argument("--currency", help="ISO 4217 currency code, e.g. EUR")
    p.add_argument("--timeout", type=float, help="seconds per request (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flowlab", description="Flow Lab: call personalization flows."
    )
    parser.add_argument("--version", action="version", version=f"flowlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sandbox,import,call,batch,edge}")

    sb = sub.add_parser("sandbox", help="serve the sandbox tenant on loopback")
    sb.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sb.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    sb.add_argument("--latency-ms", default=None, help="added latency: N, LOW-HIGH, or 'real' (118–970 ms)")
    sb.add_argument(
        "--faults", default=None, help="fault probabilities, e.g. 503=0.1,429=0.05,reset=0.02,hang=0.01"
    )
    sb.add_argument(
        "--admin-token",
        default=None,
        help="bearer token the admin API (/sandbox/...) then requires; needed for admin writes when --host "
        "is not loopback (default: FLOWLAB_SANDBOX_ADMIN_TOKEN, which other users cannot see in ps)",
    )
    sb.add_argument(
        "--replay",
        action="append",
        default=[],
        metavar="RUN.sqlite",
        help="serve the answers recorded in this run store (repeat for more); unrecorded requests get a 404",
    )
    sb.add_argument(
        "--replay-latency", action="store_true", help="with --replay: wait each answer's recorded latency"
    )
    sb.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="DIR",
        help="import this Sitecore Personalize export folder first (repeat for more; kept across resets)",
    )
    sb.add_argument(
        "--connections-to",
        metavar="URL",
        help="send every connection call to this base URL, keeping each one's path and query "
        "(default: the built-in mock systems; nothing goes to the internet)",
    )
    sb.add_argument(
        "--connection",
        action="append",
        default=[],
        metavar="NAME_OR_REF=URL",
        help="send one connection (by name or ref) to this base URL (repeat for more; the real URL allows it)",
    )
    sb.set_defaults(func=cmd_sandbox)

    imp = sub.add_parser("import", help="load a Sitecore Personalize export folder into a sandbox")
    imp.add_argument("folder", metavar="DIR", help="the export folder (folder-per-asset or flat layout)")
    imp.add_argument(
        "--base-url",
        help="the running sandbox to load it into (default: FLOWLAB_BASE_URL, else a sandbox started for "
        "this command, which checks the folder)",
    )
    imp.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    imp.add_argument(
        "--all-files", action="store_true", help="list every file, companions and non-definitions too"
    )
    imp.set_defaults(func=cmd_import)

    call = sub.add_parser("call", help="execute a flow once and print the response body")
    _add_target(call)
    who = call.add_argument_group("guest (exactly one)")
    who.add_argument("--browser-id")
    who.add_argument("--email")
    who.add_argument("--identifier", help="PROVIDER:ID")
    call.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a param; dotted keys nest (repeatable)"
    )
    call.add_argument("--retries", type=int, help="retries for connection errors, 408, 429, 5xx (default 2)")
    call.add_argument(
        "-v", "--verbose", action="store_true", help="print status, latency and headers to stderr"
    )
    call.set_defaults(func=cmd_call)

    batch = sub.add_parser("batch", help="execute a flow (or an AEP Edge event) for every guest in a CSV")
    _add_target(batch, friendly_required=False)
    batch.add_argument(
        "--provider",
        choices=("personalize", "edge"),
        default="personalize",
        help="personalize: callFlows (default; needs --friendly-id); edge: AEP Edge interact",
    )
    batch.add_argument(
        "--datastream-id", help="with --provider edge: the datastream (on a sandbox default its first)"
    )
    batch.add_argument(
        "--no-auth",
        action="store_true",
        help="with --provider edge: the unauthenticated edge call (audiences only, no attributes)",
    )
    batch.add_argument(
        "--guests",
        required=True,
        help="guest CSV (browserId, email or identifiers.provider/.id; for --provider edge "
        "identity.namespace, identity.id, optional eventType, data.*, xdm.*)",
    )
    batch.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    batch.add_argument("--rps", type=float, default=None, help="cap on requests per second")
    batch.add_argument("--retries", type=int, default=3, help="retries per guest (default 3)")
    batch.add_argument("--out", required=True, help="results: .csv, .parquet or .sqlite")
    batch.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    batch.add_argument("--variant-path", help="JSON path to the variant in the body, e.g. variant")
    batch.add_argument(
        "--by",
        help="with --provider edge: print audience membership per value of this sample column, e.g. countryCode",
    )
    batch.add_argument(
        "--simulate",
        action="store_true",
        help="sandbox only: run the flow in any status (DRAFT, PAUSED) before publishing it; "
        "sends X-Flowlab-Simulate: 1, refused on a live tenant",
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    batch.add_argument(
        "--yes", action="store_true", help="confirm a large batch on a live tenant without asking"
    )
    batch.set_defaults(func=cmd_batch)

    smp = sub.add_parser("sample", help="write a sample CSV for batch (synthetic guests or Edge identities)")
    smp.add_argument(
        "--provider",
        choices=("personalize", "edge"),
        default="personalize",
        help="personalize: synthetic callFlows guests (default); edge: the sandbox's edge profiles",
    )
    smp.add_argument("--size", type=int, default=5000, help="rows (default 5000)")
    smp.add_argument(
        "--event-type", help="with --provider edge: the eventType column, e.g. commerce.checkouts"
    )
    smp.add_argument(
        "--base-url", help="with --provider edge: a running sandbox (default: one started for this)"
    )
    smp.add_argument(
        "--seed", type=int, default=0, help="random seed (default 0: the same sample every time)"
    )
    smp.add_argument("--out", required=True, help="the CSV to write")
    smp.set_defaults(func=cmd_sample)

    edge = sub.add_parser("edge", help="send one AEP Edge interact event and print the envelope")
    edge.add_argument(
        "--base-url",
        help="Edge host, e.g. https://server.adobedc.net, or a sandbox's URL (default: FLOWLAB_EDGE_BASE_URL, "
        "else a sandbox started for this command)",
    )
    edge.add_argument(
        "--datastream-id", help="datastream (default: FLOWLAB_EDGE_DATASTREAM_ID, on a sandbox its first)"
    )
    edge.add_argument(
        "--identity", metavar="NAMESPACE:ID", help=f"the primary identity, e.g. {DEMO_IDENTITY}"
    )
    edge.add_argument(
        "--event-type", help="XDM eventType, e.g. commerce.checkouts or web.webpagedetails.pageViews"
    )
    edge.add_argument("--page-url", help="web.webPageDetails.URL, e.g. https://lumen.example/checkout")
    edge.add_argument(
        "--data", action="append", metavar="KEY=VALUE", help="free event data; dotted keys nest (repeatable)"
    )
    edge.add_argument(
        "--no-auth",
        action="store_true",
        help="the unauthenticated edge call (no IMS token): audiences only, no attributes",
    )
    edge.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print status, latency, headers and the body sent to stderr",
    )
    edge.set_defaults(func=cmd_edge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except RequestValidationError as exc:
        sys.stderr.write("error: " + "; ".join(str(p) for p in exc.problems) + "\n")
        return EXIT_USAGE
    except FlowLabError as exc:
        sys.stderr.write(f"error: {exc}\n")
        usage = isinstance(exc, UsageError | ConfigError | SampleError | RunStoreError)
        return EXIT_USAGE if usage else EXIT_API
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_API


if __name__ == "__main__":
    sys.exit(main())
