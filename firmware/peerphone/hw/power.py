"""Where the phone's power comes from, for the role policy (core/role.py): mains, a battery the
kernel knows (the power_supply class in sysfs: a laptop, a PiSugar or a HAT with a kernel
driver), or a fuel gauge on I2C that only reports volts and amps (an INA219 on a UPS HAT).

Every source has one method, `read()`, which gives a `PowerReading` or raises `PowerError`
with a line a person can act on. A board file's [battery] section says which (hw/board.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SYSFS_POWER_SUPPLY = Path("/sys/class/power_supply")
# The kernel's status strings (Documentation/ABI/testing/sysfs-class-power): all but
# Discharging mean a charger is connected ("Not charging": plugged in, held at a charge limit).
ON_EXTERNAL_POWER = {"Charging", "Full", "Not charging"}
# A lithium-ion cell's resting voltage against its charge, coarsely (percent at each volt);
# a gauge that reads volts alone can do no better, and the role's thresholds have a wide gap.
LI_ION_CURVE = ((3.00, 0), (3.30, 5), (3.50, 15), (3.60, 25), (3.70, 45), (3.80, 60), (3.90, 75),
                (4.00, 85), (4.10, 95), (4.20, 100))
INA219_SHUNT, INA219_BUS = 0x01, 0x02  # registers
INA219_SHUNT_LSB_V, INA219_BUS_LSB_V = 10e-6, 4e-3
IDLE_SHUNT_V = 50e-6  # below this (5 mA through a 0.01 ohm shunt) neither in nor out: on a charger, full


class PowerError(Exception):
    pass


@dataclass(frozen=True)
class BatterySpec:
    """A board file's [battery] section."""

    source: str = "none"  # none (mains), sysfs, ina219
    supply: str = "auto"  # sysfs: a name under /sys/class/power_supply, a directory, or auto: the first battery
    i2c_bus: int = 1  # ina219: /dev/i2c-N, its address, the cells in series
    address: int = 0x42
    cells: int = 1
    discharge_negative: bool = True  # the shunt reads negative while the cells discharge (Waveshare's wiring)


def power_source(spec: BatterySpec, sysfs_root: Path = SYSFS_POWER_SUPPLY) -> PowerSource:
    """The source `spec` names, opened; PowerError when it is not there."""
    if spec.source == "sysfs":
        return SysfsBattery.find(spec.supply, sysfs_root)
    if spec.source == "ina219":
        return Ina219Battery.open(spec.i2c_bus, spec.address, spec.cells, spec.discharge_negative)
    return Mains()


@dataclass(frozen=True)
class PowerReading:
    battery_percent: int | None  # None: no battery
    external_power: bool  # charging, full, or mains


class PowerSource(Protocol):
    def read(self) -> PowerReading: ...


class Mains:
    def read(self) -> PowerReading:
        return PowerReading(None, True)


class SysfsBattery:
    """A battery in the kernel's power_supply class: `capacity` (percent) and `status`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def find(cls, supply: str = "auto", root: Path = SYSFS_POWER_SUPPLY) -> SysfsBattery:
        """`supply`: a name under `root` (BAT0, pisugar-battery), a directory of the same files, or
        auto: the first of type Battery under `root`."""
        if supply.startswith("/"):
            if not (Path(supply) / "capacity").exists():
                raise PowerError(f"{supply}: no capacity file (a power_supply directory has capacity and status)")
            return cls(Path(supply))
        if supply != "auto":
            if not (root / supply / "capacity").exists():
                raise PowerError(f"no battery {supply} in {root} (it lists: {', '.join(_names(root)) or 'nothing'})")
            return cls(root / supply)
        for name in _names(root):
            if _read(root / name / "type", "") == "Battery" and (root / name / "capacity").exists():
                return cls(root / name)
        raise PowerError(f"no battery in {root}: is its driver loaded? (board: [battery] source)")

    def read(self) -> PowerReading:
        capacity = _read(self.directory / "capacity", None)
        if capacity is None or not capacity.isdigit():
            raise PowerError(f"{self.directory}/capacity: unreadable ({capacity!r})")
        status = _read(self.directory / "status", "Unknown")
        return PowerReading(min(100, int(capacity)), status in ON_EXTERNAL_POWER)


class Ina219Battery:
    """An INA219 current and voltage monitor between the cells and the Pi (Waveshare's UPS HATs):
    the charge is estimated from the bus voltage per cell, the direction from the shunt's sign."""

    def __init__(self, bus: Any, address: int, cells: int = 1, discharge_negative: bool = True) -> None:
        """`bus`: an smbus2.SMBus (or anything with its read_word_data)."""
        self.bus, self.address, self.cells = bus, address, cells
        self.discharge_negative = discharge_negative

    @classmethod
    def open(cls, bus_number: int, address: int, cells: int = 1, discharge_negative: bool = True) -> Ina219Battery:
        import smbus2

        try:
            bus = smbus2.SMBus(bus_number)
        except OSError as e:
            raise PowerError(f"no I2C bus {bus_number} (/dev/i2c-{bus_number}: {e.strerror}): "
                             "is I2C on (dtparam=i2c_arm=on in config.txt)?") from None
        return cls(bus, address, cells, discharge_negative)

    def _register(self, register: int) -> int:
        try:
            word = int(self.bus.read_word_data(self.address, register))
        except OSError as e:
            raise PowerError(f"INA219 at 0x{self.address:02x}: {e.strerror or e}") from None
        return ((word & 0xFF) << 8) | (word >> 8)  # SMBus words are little-endian, the INA219's big-endian

    def read(self) -> PowerReading:
        bus_v = (self._register(INA219_BUS) >> 3) * INA219_BUS_LSB_V
        raw_shunt = self._register(INA219_SHUNT)
        shunt_v = (raw_shunt - 0x10000 if raw_shunt & 0x8000 else raw_shunt) * INA219_SHUNT_LSB_V
        discharging = (shunt_v < -IDLE_SHUNT_V) if self.discharge_negative else (shunt_v > IDLE_SHUNT_V)
        return PowerReading(cell_percent(bus_v / self.cells), not discharging)


def cell_percent(volts: float) -> int:
    """A lithium-ion cell's charge from its voltage, interpolated on LI_ION_CURVE."""
    if volts <= LI_ION_CURVE[0][0]:
        return 0
    for (v0, p0), (v1, p1) in zip(LI_ION_CURVE, LI_ION_CURVE[1:]):
        if volts <= v1:
            return round(p0 + (p1 - p0) * (volts - v0) / (v1 - v0))
    return 100


def _names(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in root.iterdir())
    except OSError:
        return []


def _read(path: Path, default: str | None) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return default
