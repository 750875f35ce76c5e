"""Convert the POWDER FRS measurements (University of Utah, MIT licence) to Heimdall's power-reading table.

    python bench/convert_powder.py UPSTREAM [--out bench/data/powder_frs/single_tx.csv.gz]

UPSTREAM: a checkout of https://github.com/mhrafi66/wireless_localization_frs_uofu, or a bare clone of it (read
with `git show HEAD:…`). Reads Separated_Dataset_CSV/single_tx.csv (one transmitter per row: the RSS each receiver
measured, −101 where the receiver was not recording, the transmitter's GPS position in tx_x_coord = latitude and
tx_y_coord = longitude), Separated_Dataset_CSV/location_coordinates.json (the fixed receivers' latitude and
longitude; None for the receivers on campus shuttles) and Separated_Dataset_JSON/all_data/no_tx.json (what the
receivers read with no transmitter on air). Writes one row per (transmission, fixed receiver that was recording)
with the power table's columns `transmission, time, receiver, receiver_lat, receiver_lon, power_db, floor_db, lat,
lon, frequency_hz` — no status column: every row is a power; a receiver's floor_db is the highest power it read with
no transmitter on air (a reading at or below it cannot be told from noise: the importer reads it as not heard),
empty for the receivers the no-transmitter file does not hold (the importer then takes their lowest reading). The
powers are in each receiver's own uncalibrated dB scale (power_db), rounded to 0.01 dB; receivers not recording are
left out of that transmission's rows; the shuttles' receivers (bus-*, moving, their position per row) are left out.
Times are the data set's timestamps as given (no offset in the source).
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import json
import subprocess
from pathlib import Path

NOT_RECORDING = -101.0  # the data set's value for a receiver that was not recording
FREQUENCY_HZ = 462.7e6
SOURCE_CSV = "Separated_Dataset_CSV/single_tx.csv"
SOURCE_RECEIVERS = "Separated_Dataset_CSV/location_coordinates.json"
SOURCE_NO_TX = "Separated_Dataset_JSON/all_data/no_tx.json"
COLUMNS = (
    "transmission", "time", "receiver", "receiver_lat", "receiver_lon", "power_db", "floor_db", "lat", "lon",
    "frequency_hz",
)  # fmt: skip
MAX_SOURCE_BYTES = 64 * 2**20


def read_upstream(upstream: Path, name: str) -> str:
    """A file of the upstream repository: from a checkout, else from a bare clone's HEAD."""
    if (upstream / name).is_file():
        if (upstream / name).stat().st_size > MAX_SOURCE_BYTES:
            raise SystemExit(f"{upstream / name}: larger than {MAX_SOURCE_BYTES} bytes")
        return (upstream / name).read_text()
    shown = subprocess.run(
        ["git", "--git-dir", str(upstream), "show", f"HEAD:{name}"], capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        raise SystemExit(f"{upstream}: no {name} (a checkout or bare clone of the upstream repository?)")
    return shown.stdout


def fixed_receivers(text: str) -> dict[str, tuple[float, float]]:
    """Receiver id → (lat, lon) of the fixed receivers (the file is a Python-style literal: None, tuples)."""
    table = ast.literal_eval(text)
    if not isinstance(table, dict):
        raise SystemExit(f"{SOURCE_RECEIVERS}: expected an object of receiver → (lat, lon)")
    return {str(k): (float(v[0]), float(v[1])) for k, v in table.items() if v is not None}


def noise_ceilings(text: str) -> dict[str, float]:
    """Receiver id → the highest power (dB) it read with no transmitter on air (no_tx.json: timestamp →
    {"rx_data": [[power, lat, lon, receiver], …]}; −101, not recording, left out)."""
    table = json.loads(text)
    if not isinstance(table, dict):
        raise SystemExit(f"{SOURCE_NO_TX}: expected an object of timestamp → readings")
    ceilings: dict[str, float] = {}
    for record in table.values():
        for power, _lat, _lon, rx in record["rx_data"]:
            if float(power) != NOT_RECORDING:
                ceilings[str(rx)] = max(ceilings.get(str(rx), float("-inf")), float(power))
    return ceilings


def convert(
    measurements: str, receivers: dict[str, tuple[float, float]], floors: dict[str, float]
) -> tuple[list[list[str]], int]:
    """The table's rows (without header) and the number of transmissions; floors: receiver id → floor (dB)."""
    rows, n = [], 0
    for k, record in enumerate(csv.DictReader(io.StringIO(measurements))):
        lat, lon = float(record["tx_x_coord"]), float(record["tx_y_coord"])  # named x, y; latitude, longitude
        time = record["timestamp"].replace(" ", "T")
        readings = [(rx, float(record[rx])) for rx in receivers if rx in record]
        heard = [(rx, p) for rx, p in readings if p != NOT_RECORDING]
        if not heard:
            continue
        n += 1
        for rx, power in heard:
            rx_lat, rx_lon = receivers[rx]
            floor = f"{floors[rx]:.2f}" if rx in floors else ""
            rows.append([f"tx{k:05d}", time, rx, f"{rx_lat:.8f}", f"{rx_lon:.8f}", f"{power:.2f}", floor,
                         f"{lat:.8f}", f"{lon:.8f}", f"{FREQUENCY_HZ:.0f}"])  # fmt: skip
    return rows, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", type=Path, help="checkout or bare clone of mhrafi66/wireless_localization_frs_uofu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data/powder_frs/single_tx.csv.gz")
    args = parser.parse_args()
    receivers = fixed_receivers(read_upstream(args.upstream, SOURCE_RECEIVERS))
    floors = noise_ceilings(read_upstream(args.upstream, SOURCE_NO_TX))
    rows, n = convert(read_upstream(args.upstream, SOURCE_CSV), receivers, floors)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", compresslevel=9, mtime=0) as f:  # mtime 0: the same bytes on every run
        f.write(text.getvalue().encode())
    tmp.replace(args.out)
    print(f"{args.out}: {len(rows)} readings of {n} transmissions at {len(receivers)} fixed receivers")


if __name__ == "__main__":
    main()
