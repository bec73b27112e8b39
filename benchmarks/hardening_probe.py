"""Hostile and broken input, replayed against ``gnnseg serve`` on 127.0.0.1 and against the command line.

Every class of the hardening review gets a few crafted inputs (bounded: about 30 inputs, a few minutes). For
each: the HTTP status (or exit code), the server's peak resident memory above its idle level while the input was
handled, the bytes the server wrote to its temporary folder (its ``TMPDIR`` is a folder of the probe's, sampled
with the memory every 5 ms), the seconds, and whether the answer was the one expected. Targets:

- no 500s; every refusal where the header allows is made before decoding;
- no input under 1 MiB raises peak memory by more than 512 MB above idle or writes more than 4x its own size;
- a 2D one-box request is answered within 1 s while a 3D request runs;
- zero silently wrong results (every broken series and mispaired folder refused).

Writes ``benchmarks/results/hardening.json`` and ``.md``::

    python benchmarks/hardening_probe.py
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
from PIL import Image

from gnnseg.core import machine_info, write_json
from serve_load import free_port, resident_mb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's crafted inputs, replayed here
from tests.seg.crafted_inputs import nifti_declaring, npz_declaring, png_declaring  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "probe-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 2**20


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


class Watch(threading.Thread):
    """Peak resident memory of ``pid`` and peak size of ``folder`` while running."""

    def __init__(self, pid: int, folder: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.folder, self.running = pid, folder, True
        self.peak_mb, self.peak_disk = resident_mb(pid), folder_bytes(folder)

    def run(self) -> None:
        while self.running:
            self.peak_mb = max(self.peak_mb, resident_mb(self.pid))
            self.peak_disk = max(self.peak_disk, folder_bytes(self.folder))
            time.sleep(0.005)

    def stop(self) -> None:
        self.running = False
        self.join()


# ---- crafted inputs ----

def png_of(height: int, width: int) -> bytes:
    ramp = np.arange(height, dtype=np.uint8)[:, None] + np.arange(width, dtype=np.uint8)[None, :]  # wraps at 256
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()


def nifti_volume(shape: tuple[int, int, int], zeros: bool = False) -> bytes:
    """A gzipped NIfTI whose volume reads back as ``shape`` ``(Z, Y, X)``: CT-like noise, or all air."""
    volume = np.full(shape, -1000, np.int16) if zeros else \
        np.random.default_rng(0).normal(40, 300, shape).astype(np.int16)
    with tempfile.TemporaryDirectory() as folder:
        nib.save(nib.Nifti1Image(volume.T, np.diag([0.8, 0.8, 2.5, 1.0])), Path(folder) / "v.nii.gz")
        return (Path(folder) / "v.nii.gz").read_bytes()


def npz_with_boxes(count: int) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, imgs=np.zeros((64, 64, 3), np.uint8), boxes=np.tile([[0, 0, 4, 4]], (count, 1)))
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def dicom_zip(series: Path, *, drop: int | None = None, garbage: int | None = None) -> bytes:
    files = sorted(series.iterdir())
    entries = {}
    for index, path in enumerate(files):
        if index == drop:
            continue
        entries[f"series/{path.name}"] = b"\0" * 200 + b"garbage" if index == garbage else path.read_bytes()
    return zip_of(entries)


# ---- the probe ----

class Probe:
    def __init__(self, url: str, server: subprocess.Popen, tmp: Path) -> None:
        self.url, self.server, self.tmp = url, server, tmp
        self.client = httpx.Client(base_url=url, timeout=300, headers=AUTH)
        self.rows: list[dict] = []
        self.idle_mb = resident_mb(server.pid)

    def record(self, name: str, kind: str, size: int, expected: set[int], call) -> dict:
        watch = Watch(self.server.pid, self.tmp)
        disk_before = folder_bytes(self.tmp)
        watch.start()
        began = time.perf_counter()
        try:
            status, message = call()
        except Exception as exc:  # a probe input that breaks the client is a result too
            status, message = -1, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - began
        watch.stop()
        row = {"input": name, "class": kind, "bytes": size, "status": status, "ok": status in expected,
               "expected": sorted(expected), "peak_rss_above_idle_mb": round(watch.peak_mb - self.idle_mb, 1),
               "disk_written_bytes": max(0, watch.peak_disk - disk_before), "seconds": round(seconds, 3),
               "message": (message or "")[:200]}
        self.rows.append(row)
        print(f"{name:44s} {status:>4} {'ok' if row['ok'] else 'UNEXPECTED':10s} "
              f"{row['peak_rss_above_idle_mb']:8.1f} MB {row['disk_written_bytes']:>12,} B {seconds:7.2f} s "
              f"{row['message'][:70]}", flush=True)
        return row

    def upload(self, name: str, kind: str, data: bytes, expected: set[int], filename: str | None = None,
               headers: dict | None = None) -> dict:
        def call():
            response = self.client.post("/v1/images", files={"file": (filename or name, data)},
                                        headers=headers or {})
            return response.status_code, _message(response)
        return self.record(name, kind, len(data), expected, call)


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""


def raw_request(url: str, method: str, path: str, body, headers: dict, chunked: bool = False) -> tuple[int, str]:
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        connection.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        try:
            return response.status, json.loads(text)["error"]["message"]
        except (ValueError, KeyError):
            return response.status, text[:200]
    except (BrokenPipeError, ConnectionResetError) as exc:  # refused mid-body: the server closed on us
        return 413, f"connection closed by the server while sending ({type(exc).__name__})"
    finally:
        connection.close()


def cli(args: list[str], *, interrupt_after: float | None = None) -> tuple[int, str]:
    process = subprocess.Popen([sys.executable, "-m", "gnnseg.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    return process.returncode, err.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--checkpoint", help="the served model (default: the service's default)")
    args = parser.parse_args()
    series = Path(args.data) / "totalsegmentator_examples" / "example_ct_dicom"
    work = Path(tempfile.mkdtemp(prefix="gnnseg-probe-"))
    server_tmp = work / "server-tmp"
    server_tmp.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    server = subprocess.Popen([sys.executable, "-m", "gnnseg.cli", "serve", *model, "--port", str(port),
                               "--token", TOKEN],
                              stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(server_tmp)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        probe = Probe(url, server, server_tmp)
        rows = run_probes(probe, series, url, work)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(rows, args, probe.idle_mb)


def run_probes(probe: Probe, series: Path, url: str, work: Path) -> list[dict]:
    memory = "memory and disk"
    probe.upload("NIfTI.gz declaring 1024x1024x256", memory, nifti_declaring((1024, 1024, 256), payload=500_000), {413},
                 "ct.nii.gz")
    probe.upload("PNG declaring 30000x30000", memory, png_declaring(30_000, 30_000), {413}, "bomb.png")
    probe.upload("PNG 12000x12000 (real pixels)", memory, png_of(12_000, 12_000), {413}, "big.png")
    probe.upload("npz declaring 10^12 values", memory, npz_declaring((10**6, 10**6)), {413}, "2D_case.npz")
    probe.upload("npz with 2,000,000 boxes", memory, npz_with_boxes(2_000_000), {413}, "2D_case.npz")
    probe.upload("zip bomb (16 MiB of zeros per entry x 64)", memory,
                 zip_of({f"series/{k}.dcm": bytes(16 * MiB) for k in range(64)}), {413}, "series.zip")
    probe.upload("zip with 20,000 entries", memory, zip_of({f"s/{k}.dcm": b"" for k in range(20_000)}), {413},
                 "series.zip")
    probe.upload("zip escaping its folder", memory, zip_of({"../../etc/x.dcm": b"x"}), {413}, "series.zip")
    probe.record("body declaring 1 GiB (Content-Length)", memory, 10 * MiB, {413},
                 lambda: raw_request(url, "POST", "/v1/images", b"x" * (10 * MiB),
                                     {**AUTH, "Content-Length": str(2**30),
                                      "Content-Type": "multipart/form-data; boundary=b"}))

    def chunked_body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(300):
            yield b"x" * MiB
    probe.record("body of 300 MiB, chunked", memory, 300 * MiB, {413},
                 lambda: raw_request(url, "POST", "/v1/images", chunked_body(),
                                     {**AUTH, "Content-Type": "multipart/form-data; boundary=b",
                                      "Transfer-Encoding": "chunked"}, chunked=True))
    probe.upload("PNG 8000x8000 (over the default 4096^2)", memory, png_of(8000, 8000), {413}, "big.png")
    big = png_of(4096, 4096)
    row = probe.upload("PNG 4096x4096 at the pixel limit", memory, big, {201}, "big.png")
    if row["ok"]:
        image = probe.client.post("/v1/images", files={"file": ("big.png", big)}).json()["id"]
        boxes = [[100 + 480 * k, 100, 500 + 480 * k, 3900] for k in range(8)]
        probe.record("4096x4096: 8 boxes, json", memory, len(big), {200}, lambda: _segment(probe, image, boxes))
        probe.record("4096x4096: 64 boxes, png", memory, len(big), {200},
                     lambda: _segment(probe, image, [[50 + 60 * k, 50, 150 + 60 * k, 4000] for k in range(64)],
                                      "png"))
        probe.client.delete(f"/v1/images/{image}")
    volume = nifti_volume((244, 512, 512), zeros=True)
    row = probe.upload("NIfTI 512x512x244 at the voxel limit", memory, volume, {201}, "ct.nii.gz")
    if row["ok"]:
        image = probe.client.post("/v1/images", files={"file": ("ct.nii.gz", volume)}).json()["id"]
        probe.record("512x512x244: 4 3D boxes of 6 slices, npz", memory, len(volume), {200},
                     lambda: _segment_3d(probe, image, [[50 + 100 * k, 50, 120, 140 + 100 * k, 450, 125]
                                                        for k in range(4)]))
        probe.client.delete(f"/v1/images/{image}")
    probe.record("200 slow-loris connections", memory, 0, {0}, lambda: _slow_loris(url))
    probe.record("2D one box while a 3D request runs", memory, 0, {200}, lambda: _fairness(probe))

    wrong = "silently wrong results"
    probe.upload("DICOM series, one slice missing", wrong, dicom_zip(series, drop=7), {422}, "ct.zip")
    probe.upload("DICOM series, one garbage slice", wrong, dicom_zip(series, garbage=5), {422}, "ct.zip")
    probe.upload("DICOM series, one truncated slice", wrong,
                 zip_of({f"s/{p.name}": p.read_bytes()[: -4000 if k == 3 else None]
                         for k, p in enumerate(sorted(series.iterdir()))}), {422}, "ct.zip")
    probe.record("seg evaluate: case.1 / case.2 names", wrong, 0, {2}, lambda: _mispaired(work))

    errors = "errors a person can act on"
    probe.upload("NIfTI declaring 32767^3", errors, nifti_declaring((32767, 32767, 32767), payload=1000), {413},
                 "x.nii.gz")
    probe.upload("truncated NIfTI (server path hidden?)", errors, nifti_volume((24, 20, 5))[:3000], {422},
                 "patient.nii.gz")
    probe.record("a folder given as --image", errors, 0, {2},
                 lambda: cli(["seg", "segment", "--image", str(work), "--box", "1,1,5,5", "-o",
                              str(work / "o.png")]))
    text, picture = work / "notes.txt", work / "picture.png"
    text.write_text("hello\n")
    picture.write_bytes(png_of(64, 64))
    probe.record("a text file as --checkpoint", errors, 0, {2},
                 lambda: cli(["seg", "segment", "--image", str(picture), "--box", "5,5,40,40", "-o",
                              str(work / "o.png"), "--checkpoint", str(text)]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        probe.record("serve on a port in use", errors, 0, {2},
                     lambda: cli(["serve", "--port", str(taken.getsockname()[1])]))
    probe.record("Ctrl+C during seg lite predict", errors, 0, {130}, lambda: _interrupted_lite(work))

    security = "security"
    probe.record("Host: attacker.example (DNS rebinding)", security, 0, {421},
                 lambda: _status(probe.client.get("/healthz", headers={"Host": "attacker.example"})))
    probe.record("cross-site POST (Origin: evil.example)", security, 0, {403},
                 lambda: _status(probe.client.post("/v1/images", files={"file": ("a.png", png_of(32, 32))},
                                                   headers={"Origin": "http://evil.example"})))
    probe.record("API request without the token", security, 0, {401},
                 lambda: _status(httpx.post(f"{url}/v1/images", files={"file": ("a.png", png_of(32, 32))})))
    probe.record("same file twice: ids differ", security, 0, {1}, lambda: _ids_differ(probe))
    return probe.rows


def _status(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, _message(response)


def _segment(probe: Probe, image: str, boxes: list, output: str = "json") -> tuple[int, str]:
    response = probe.client.post(f"/v1/images/{image}/segment", json={"boxes": boxes, "format": output})
    return response.status_code, _message(response) or f"{len(response.content):,} bytes back"


def _segment_3d(probe: Probe, image: str, boxes: list) -> tuple[int, str]:
    response = probe.client.post(f"/v1/images/{image}/segment", json={"boxes3d": boxes, "format": "npz"})
    return response.status_code, _message(response) or f"{len(response.content):,} bytes back"


def _slow_loris(url: str) -> tuple[int, str]:
    host, port = url.split("//")[1].split(":")
    sockets = []
    for _ in range(200):
        connection = socket.create_connection((host, int(port)), timeout=5)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sockets.append(connection)
    time.sleep(12)
    still_open = 0
    for connection in sockets:
        connection.settimeout(0.2)
        try:
            still_open += connection.recv(1) != b""
        except TimeoutError:
            still_open += 1
        except OSError:
            pass
        connection.close()
    healthy = httpx.get(f"{url}/healthz", timeout=10).status_code
    return still_open, f"{still_open} of 200 still open after 12 s; /healthz then answered {healthy}"


def _fairness(probe: Probe) -> tuple[int, str]:
    volume = probe.client.post("/v1/images", files={"file": ("ct.nii.gz", nifti_volume((20, 256, 256)))}).json()["id"]
    image = probe.client.post("/v1/images", files={"file": ("a.png", png_of(256, 256))}).json()["id"]
    probe.client.post(f"/v1/images/{image}/segment", json={"boxes": [[20, 20, 120, 120]]})   # encoded once
    finished = {}

    def long_3d():
        answer = probe.client.post(f"/v1/images/{volume}/segment",
                                   json={"boxes3d": [[30, 30, 0, 200, 200, 19]] * 4, "format": "npz"})
        finished["3d"], finished["status"] = time.perf_counter(), answer.status_code
    worker = threading.Thread(target=long_3d)
    worker.start()
    time.sleep(0.5)
    began = time.perf_counter()
    response = probe.client.post(f"/v1/images/{image}/segment", json={"boxes": [[30, 30, 130, 130]]})
    answered = time.perf_counter()
    worker.join()
    latency = answered - began
    status = response.status_code if latency <= 1.0 and answered < finished["3d"] else 0
    return status, (f"2D answered in {latency:.2f} s; the 3D request ({finished['status']}) finished "
                    f"{finished['3d'] - answered:.1f} s later")


def _mispaired(work: Path) -> tuple[int, str]:
    images, masks = work / "pairs" / "images", work / "pairs" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    disk = np.zeros((64, 64), np.uint8)
    disk[20:40, 20:40] = 255
    for name in ("case.1", "case.2"):
        Image.fromarray(np.stack([disk] * 3, -1)).save(images / f"{name}.png")
    Image.fromarray(disk).save(masks / "case.1.png")
    return cli(["seg", "evaluate", "--images", str(images), "--masks", str(masks), "--checkpoint", "lite_medsam"])


def _interrupted_lite(work: Path) -> tuple[int, str]:
    cases = work / "lite_cases"
    cases.mkdir()
    for k in range(40):
        np.savez(cases / f"2DBox_{k}.npz", imgs=np.random.default_rng(k).integers(0, 255, (256, 256, 3), np.uint8),
                 boxes=np.array([[20, 20, 200, 200]]))
    code, err = cli(["seg", "lite", "predict", "--input", str(cases), "--output", str(work / "lite_out"),
                     "--checkpoint", "lite_medsam"], interrupt_after=8.0)
    lines = err.count("\n") + 1 if err else 0
    return code, f"{lines} line(s): {err}"


def _ids_differ(probe: Probe) -> tuple[int, str]:
    data = png_of(64, 64)
    first, second = (probe.client.post("/v1/images", files={"file": ("a.png", data)}).json()["id"] for _ in range(2))
    return int(first != second), f"{first} / {second}"


def report(rows: list[dict], args: argparse.Namespace, idle_mb: float) -> None:
    small = [row for row in rows if 0 < row["bytes"] < MiB]
    summary = {
        "inputs": len(rows), "unexpected": [row["input"] for row in rows if not row["ok"]],
        "server_errors_500": [row["input"] for row in rows if row["status"] >= 500 and row["status"] != 503],
        "max_rss_above_idle_mb_inputs_under_1MiB": max(row["peak_rss_above_idle_mb"] for row in small),
        "inputs_under_1MiB_over_512MB": [row["input"] for row in small if row["peak_rss_above_idle_mb"] > 512],
        "inputs_under_1MiB_writing_over_4x": [row["input"] for row in small
                                              if row["disk_written_bytes"] > 4 * row["bytes"]],
        "idle_rss_mb": round(idle_mb, 1),
    }
    payload = {"command": shlex.join(["python", "benchmarks/hardening_probe.py", *sys.argv[1:]]),
               "checkpoint": args.checkpoint, "machine": machine_info(), "summary": summary, "inputs": rows}
    write_json(RESULTS / "hardening.json", payload)
    lines = ["# Hostile and broken input against the service and the commands", "",
             f"Served model `{args.checkpoint or 'the default'}`; idle server {idle_mb:.0f} MB. Memory: peak "
             "resident above idle while the input was handled; disk: bytes the server wrote to its temporary folder.",
             "",
             "| input | class | bytes | status | as expected | peak MB above idle | disk bytes | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['input']} | {r['class']} | {r['bytes']:,} | {r['status']} | {'yes' if r['ok'] else 'NO'} | "
              f"{r['peak_rss_above_idle_mb']:.0f} | {r['disk_written_bytes']:,} | {r['seconds']:.2f} |" for r in rows]
    lines += ["", "Summary: " + json.dumps(summary)]
    (RESULTS / "hardening.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
