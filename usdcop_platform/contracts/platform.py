"""Loads config/ into one typed PlatformConfig. Every consumer reads configuration through here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from usdcop_platform.contracts.base import load_model, read_yaml, validate
from usdcop_platform.contracts.date_ranges import DateRanges
from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.features import FeatureContract, macro_variables_of
from usdcop_platform.contracts.instrument import InstrumentConfig
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.contracts.mlops import MlopsConfig
from usdcop_platform.contracts.quality import QualityConfig

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@dataclass(frozen=True)
class PlatformConfig:
    config_dir: Path
    instrument: InstrumentConfig
    macro: MacroSSOT
    date_ranges: DateRanges
    features: FeatureContract
    mlops: MlopsConfig
    quality: QualityConfig
    experiments: dict[str, ExperimentConfig]

    def experiment(self, name: str) -> ExperimentConfig:
        try:
            return self.experiments[name]
        except KeyError:
            known = ", ".join(sorted(self.experiments)) or "none"
            raise ConfigError(
                self.config_dir / "experiments", name, f"no experiment named {name!r} (known: {known})"
            ) from None


def load_experiments(directory: Path, contract: FeatureContract) -> dict[str, ExperimentConfig]:
    experiments: dict[str, ExperimentConfig] = {}
    if not directory.is_dir():
        raise ConfigError(directory, "", "experiments directory not found")
    for path in sorted(directory.glob("*.yaml")):
        exp = validate(ExperimentConfig, read_yaml(path), path)
        if exp.name in experiments:
            raise ConfigError(path, "name", f"experiment {exp.name!r} is defined twice")
        if exp.feature_contract_version != contract.version:
            raise ConfigError(
                path,
                "feature_contract_version",
                f"{exp.feature_contract_version!r} does not match the feature contract {contract.version!r}",
            )
        experiments[exp.name] = exp
    return experiments


def load_platform_config(config_dir: Path | str | None = None) -> PlatformConfig:
    """Load and validate every file in config/; raises ConfigError naming file, key and reason."""
    root = Path(config_dir) if config_dir else DEFAULT_CONFIG_DIR
    features = load_model(FeatureContract, root / "features.yaml")
    macro = load_model(MacroSSOT, root / "macro_variables_ssot.yaml")
    missing = [v for v in features.macro_variables if v not in macro.variables]
    if missing:
        readers = [n for n in features.names if set(macro_variables_of([n])) & set(missing)]
        raise ConfigError(root / "macro_variables_ssot.yaml", "variables",
                          f"missing variable(s) {missing}, read by the feature(s) {readers} of features.yaml")
    return PlatformConfig(
        config_dir=root,
        instrument=load_model(InstrumentConfig, root / "instrument.yaml"),
        macro=macro,
        date_ranges=load_model(DateRanges, root / "date_ranges.yaml"),
        features=features,
        mlops=load_model(MlopsConfig, root / "mlops.yaml"),
        quality=load_model(QualityConfig, root / "quality.yaml"),
        experiments=load_experiments(root / "experiments", features),
    )


@lru_cache(maxsize=8)
def get_config(config_dir: str | None = None) -> PlatformConfig:
    """Cached loader for long-running processes (config is immutable once loaded)."""
    return load_platform_config(config_dir)
