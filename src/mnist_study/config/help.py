"""`python train.py --help`: the config groups a user chooses from (conf/train.yaml's hydra.help.template)."""

from __future__ import annotations

# Groups that are no choice of the user's: Hydra's own, and the typed schemas that each option group's choice
# pulls in (schema/model: ${model}) to check its values.
INTERNAL_GROUPS = ("hydra", "schema")


def public_config_groups() -> str:
    """Hydra's $APP_CONFIG_GROUPS less the INTERNAL_GROUPS: `group: option, option`, a line per group, sorted."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if not GlobalHydra.instance().is_initialized():
        return ""
    loader = GlobalHydra.instance().config_loader()
    lines = []

    def walk(parent: str) -> None:
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group.split("/")[0] in INTERNAL_GROUPS:
                continue
            if options := loader.get_group_options(group, ObjectType.CONFIG):
                lines.append(f"{group}: {', '.join(sorted(options))}")
            walk(group)

    walk("")
    return "\n".join(sorted(lines))
