"""Power sources: the kernel's power_supply files (a directory the test writes in their format),
an INA219 fuel gauge (registers served as an SMBus serves them), and what a person sees when
the source named by the board is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
from peerphone.hw.power import (
    BatterySpec,
    Ina219Battery,
    Mains,
    PowerError,
    PowerReading,
    SysfsBattery,
    cell_percent,
    power_source,
)


def supply(root: Path, name: str, kind: str, **files: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "type").write_text(kind + "\n")
    for file, text in files.items():
        (directory / file).write_text(text + "\n")
    return directory


def test_a_kernel_battery_reads_its_capacity_and_whether_a_charger_is_on(tmp_path: Path):
    supply(tmp_path, "AC", "Mains", online="1")
    battery = supply(tmp_path, "BAT0", "Battery", capacity="80", status="Discharging")
    source = power_source(BatterySpec(source="sysfs"), sysfs_root=tmp_path)  # auto: the first of type Battery
    assert source.read() == PowerReading(80, False)
    for status, external in (("Charging", True), ("Full", True), ("Not charging", True), ("Unknown", False)):
        (battery / "status").write_text(status + "\n")
        assert source.read() == PowerReading(80, external), status
    (battery / "capacity").write_text("15\n")
    assert source.read().battery_percent == 15


def test_a_missing_or_unreadable_battery_is_one_clear_line(tmp_path: Path):
    supply(tmp_path, "AC", "Mains", online="1")
    with pytest.raises(PowerError, match="no battery in .*is its driver loaded"):
        SysfsBattery.find("auto", tmp_path)
    with pytest.raises(PowerError, match=r"no battery BAT1 in .* \(it lists: AC\)"):
        SysfsBattery.find("BAT1", tmp_path)
    with pytest.raises(PowerError, match="no capacity file"):
        SysfsBattery.find(str(tmp_path / "AC"))
    broken = supply(tmp_path, "BAT0", "Battery", capacity="", status="Discharging")
    assert SysfsBattery.find(str(broken)).directory == broken  # a directory named whole
    with pytest.raises(PowerError, match="capacity: unreadable"):
        SysfsBattery(broken).read()


class Ina219Registers:
    """An INA219's registers as smbus2's read_word_data returns them: byte-swapped words."""

    def __init__(self, bus_volts: float, shunt_volts: float) -> None:
        self.words = {0x02: int(bus_volts / 4e-3) << 3, 0x01: round(shunt_volts / 10e-6) & 0xFFFF}
        self.asked: list[tuple[int, int]] = []

    def read_word_data(self, address: int, register: int) -> int:
        self.asked.append((address, register))
        word = self.words[register]
        return ((word & 0xFF) << 8) | (word >> 8)


def test_an_ina219_gives_the_charge_from_the_cell_voltage_and_the_direction_from_the_shunt():
    discharging = Ina219Registers(bus_volts=7.6, shunt_volts=-0.004)  # two cells at 3.8 V, 400 mA out
    reading = Ina219Battery(discharging, 0x42, cells=2).read()
    assert reading == PowerReading(60, False) and {a for a, _ in discharging.asked} == {0x42}
    charging = Ina219Registers(bus_volts=4.1, shunt_volts=0.002)
    assert Ina219Battery(charging, 0x43, cells=1).read() == PowerReading(95, True)
    wired_the_other_way = Ina219Registers(bus_volts=4.1, shunt_volts=0.002)
    assert not Ina219Battery(wired_the_other_way, 0x43, discharge_negative=False).read().external_power


def test_cell_voltage_to_charge_is_monotonic_and_bounded():
    charges = [cell_percent(v / 100) for v in range(250, 450)]
    assert charges == sorted(charges) and charges[0] == 0 and charges[-1] == 100
    assert cell_percent(3.6) == 25 and cell_percent(3.75) == 52


def test_a_gauge_on_an_i2c_bus_this_machine_lacks_says_how_to_turn_i2c_on():
    with pytest.raises(PowerError, match=r"no I2C bus 97 \(/dev/i2c-97: .*dtparam=i2c_arm=on"):
        power_source(BatterySpec(source="ina219", i2c_bus=97))


def test_no_battery_is_mains():
    assert power_source(BatterySpec()).read() == PowerReading(None, True)
    assert isinstance(power_source(BatterySpec(source="none")), Mains)
