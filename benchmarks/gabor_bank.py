"""The fixed Gabor bank's forward pass: niflow's bank against the inverse-FFT form it replaced.

Usage::

    .venv/bin/python benchmarks/gabor_bank.py [--sizes 32 64 96] [--frames 200]

For each square image size: milliseconds per frame of :class:`niflow.model.filters.GaborBank`
(8 orientations × 4 scales, the default V1 bank; one complex spectrum product per pair and
an inverse DFT restricted to the image's pixels as two matrix products) and of the form it
replaced, written here (the same kernels and padding; every pair's even and odd responses by
two real inverse FFTs of the padded grid), measured one after the other in this process: once
in the former bank's chunks (as many frames as keep the spectrum products near 256 MiB) and
once in chunks of 16 frames. Also the largest difference between the energies.
"""

from __future__ import annotations

import argparse
import time

import torch

from niflow.model.filters import GaborBank, bank_wavelengths

FORMER_CHUNK_BYTES = 256 * 2**20


def reference_energy(bank: GaborBank, img: torch.Tensor, chunk: int) -> torch.Tensor:
    """Energies (B, F, H, W) by real FFTs of the even and odd kernels (the former form)."""
    fy, fx = bank.fft_size
    h, w = bank.image_size
    r = bank.radius
    k = bank.kernels.float()
    padded = torch.nn.functional.pad(k, (0, fx - k.shape[-1], 0, fy - k.shape[-2]))
    kern = torch.fft.rfft2(torch.roll(padded, (-r, -r), dims=(-2, -1)))  # (F, 2, fy, fx//2+1)
    out = []
    for i in range(0, img.shape[0], chunk):
        spec = torch.fft.rfft2(img[i:i + chunk], s=(fy, fx))
        z = torch.fft.irfft2(spec[:, None, None] * kern[None], s=(fy, fx))[..., :h, :w]
        out.append(torch.sqrt(z[:, :, 0] ** 2 + z[:, :, 1] ** 2 + 1e-8))
    return torch.cat(out)


def timed(fn, x: torch.Tensor, *extra) -> tuple[torch.Tensor, float]:
    fn(x[:4], *extra)  # warm-up
    start = time.perf_counter()
    out = fn(x, *extra)
    return out, time.perf_counter() - start


def reference(x: torch.Tensor, bank: GaborBank, chunk: int) -> torch.Tensor:
    return reference_energy(bank, x[:, 0], chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}, {args.frames} frames per size")
    print("| size px | FFT grid | niflow ms/frame | former bank ms/frame (its chunk) | "
          "speed-up | inverse FFTs, 16-frame chunks ms/frame | speed-up | max abs difference |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        bank = GaborBank(1, (size, size), 8, bank_wavelengths(size, 4))
        x = torch.rand(args.frames, 1, size, size)
        with torch.no_grad():
            new, t_new = timed(bank, x)
            former = max(1, FORMER_CHUNK_BYTES // (8 * 2 * bank.kernels.shape[0]
                                                       * bank.fft_size[0]
                                                       * (bank.fft_size[1] // 2 + 1)))
            ref, t_ref = timed(reference, x, bank, former)
            _, t_16 = timed(reference, x, bank, 16)
        diff = (new - ref).abs().max().item()
        ms = 1e3 / args.frames
        print(f"| {size} | {bank.fft_size[0]}×{bank.fft_size[1]} | {t_new * ms:.2f} | "
              f"{t_ref * ms:.2f} ({former}) | {t_ref / t_new:.1f} | {t_16 * ms:.2f} | "
              f"{t_16 / t_new:.1f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
