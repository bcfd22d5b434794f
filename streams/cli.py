"""The `livepulse` command. Each sub-command lives next to the code it drives and is imported lazily,
so `livepulse simulate` does not pay for importing Faust."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click.Command
COMMANDS = {
    "worker": "streams.app:worker_command",
    "broker": "streams.broker:broker_command",
    "simulate": "streams.simulate.cli:simulate_command",
    "replay": "streams.simulate.cli:replay_command",
    "demo": "streams.demo:demo_command",
    "forget": "streams.forget:forget_command",
    "report": "streams.outputs.report:report_command",
    "bench": "streams.bench.cli:bench_command",
    "gateway": "streams.gateway.app:gateway_command",
    "gateway-bench": "streams.gateway.bench:gateway_bench_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="livepulse")
def main() -> None:
    """LivePulse: live webinar engagement from Kafka to Prometheus, Grafana and aggregated topics."""
    from streams.settings import env_file

    try:  # a LIVEPULSE_ENV_FILE that does not exist: one line, before any command starts (docs/security.md)
        env_file()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
