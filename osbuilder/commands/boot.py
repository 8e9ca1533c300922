"""osbuilder boot: boot a kernel with an image or an initrd under QEMU and check the agent."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from osbuilder import options
from osbuilder.boot.options import ASSETS, CHECKS, HOW
from osbuilder.boot.plan import Assets, VmChoices, boot, bundle_configs, choose_assets, plan_vm
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS

if TYPE_CHECKING:
    from osbuilder.boot.check import BootReport

TABLES = (ASSETS, HOW, CHECKS, BUDGETS)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables (osbuilder.boot.options)


def boot_one(context: Context, values: dict[str, Any], choices: VmChoices, assets: Assets,
             expect_version: str | None) -> BootReport:
    vm, root = plan_vm(choices, assets)
    return boot(vm, root, context.cache, timeout=values["timeout"], expect_agent_version=expect_version,
                console_log=values["console_log"], budgets=None if values["no_budgets"] else context.versions)


def _render(label: str, report: BootReport) -> str:
    lines = [f"{label}: {'ok' if report.ok else 'FAILED'} ({report.kind}, accel {report.accel}, "
             f"transport {report.transport})"]
    for check in report.checks:
        lines.append(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")
    timings = ", ".join(f"{key} {value:.2f}s" for key, value in report.timings.items() if value is not None)
    if timings:
        lines.append(f"  timings from QEMU start: {timings}")
    if report.error:
        lines.append(f"  error: {report.error}")
        if report.console_tail:
            lines.append("  console:")
            lines.extend(f"    | {text}" for text in report.console_tail)
    return "\n".join(lines)


def run(context: Context, args: argparse.Namespace) -> Outcome:
    values = options.values(args, *TABLES)
    choices = options.request(VmChoices, args, HOW)
    if values["bundle"] is not None:
        reports: list[tuple[str, BootReport]] = []
        with bundle_configs(values["bundle"]) as (version, configs):
            # What ships must match: the agent in every asset answers with the bundle's version.
            expected = values["expect_agent_version"] or version or None
            for label, assets in configs:
                reports.append((label, boot_one(context, values, choices, assets, expected)))
        ok = all(report.ok for _, report in reports)
        data: dict[str, Any] = {"ok": ok, "bundle": str(values["bundle"]),
                                "boots": [{"config": label, **report.to_json()} for label, report in reports]}
        text = "\n".join(_render(label, report) for label, report in reports)
        return Outcome(data, text, exit_code=0 if ok else 1)
    assets = choose_assets(values["kernel"], values["image"], values["initrd"], values["config"])
    report = boot_one(context, values, choices, assets, values["expect_agent_version"])
    return Outcome(report.to_json(), _render(assets.label, report), exit_code=0 if report.ok else 1)


COMMAND = Command("boot", "boot assets under QEMU as the Kata runtime would and check the agent answers", configure,
                  run, order=60, options=TABLES)
