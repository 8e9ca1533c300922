"""osbuilder boot: boot a kernel with an image or an initrd under QEMU and check the agent."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from osbuilder.boot.options import add_asset_options, add_vm_options
from osbuilder.boot.plan import Assets, VmChoices, bundle_configs, choose_assets, plan_vm
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context

if TYPE_CHECKING:
    from osbuilder.boot.check import BootReport


def configure(parser: argparse.ArgumentParser) -> None:
    add_asset_options(parser, bundle_help="a release bundle: boot its image and its initrd with its "
                                          "configuration-qemu*.toml")
    add_vm_options(parser)
    checks = parser.add_argument_group("checks")
    checks.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="deadline for the whole boot check, from QEMU's start (default 300)")
    checks.add_argument("--expect-agent-version", metavar="VERSION",
                        help="fail unless the agent's Health/Version reports this version")


def boot_one(context: Context, args: argparse.Namespace, assets: Assets, expect_version: str | None) -> BootReport:
    vm, root = plan_vm(VmChoices.from_args(args), assets, context.cache)
    # Imported here: the agent client needs a recent protobuf, which the other commands (a rootless
    # build-rootfs on a host's system Python, for one) must not depend on.
    from osbuilder.boot.check import CheckOptions, boot_check

    options = CheckOptions(timeout=args.timeout, expect_agent_version=expect_version,
                           console_log=args.console_log, expect_dax=root.dax(vm.arch.name))
    return boot_check(vm, options)


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
    if args.bundle is not None:
        reports: list[tuple[str, BootReport]] = []
        with bundle_configs(args.bundle) as (version, configs):
            # What ships must match: the agent in every asset answers with the bundle's version.
            expected = args.expect_agent_version or version or None
            for label, assets in configs:
                reports.append((label, boot_one(context, args, assets, expected)))
        ok = all(report.ok for _, report in reports)
        data: dict[str, Any] = {"ok": ok, "bundle": str(args.bundle),
                                "boots": [{"config": label, **report.to_json()} for label, report in reports]}
        text = "\n".join(_render(label, report) for label, report in reports)
        return Outcome(data, text, exit_code=0 if ok else 1)
    assets = choose_assets(args.kernel, args.image, args.initrd, args.config)
    report = boot_one(context, args, assets, args.expect_agent_version)
    return Outcome(report.to_json(), _render(assets.label, report), exit_code=0 if report.ok else 1)


COMMAND = Command("boot", "boot assets under QEMU as the Kata runtime would and check the agent answers", configure,
                  run, order=60)
