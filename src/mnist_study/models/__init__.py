"""The networks (backbones, dropout), the one LightningModule that trains them (classifier), its per-epoch metric
and the optimizers and schedules it builds by name. Trusts a validated config: bad values are config's to refuse."""
