#!/usr/bin/python3
"""The reference for bench/compare.sh: gantry's GAN training step in Python PyTorch eager.

Same architectures as trainer/models.cpp (the MLP GAN and the 28x28 DCGAN), the same
non-saturating loss written with softplus as trainer/losses.cpp, the same update order as
trainer/gan_step.cpp (D on real and detached fakes, then G through a frozen D), Adam with the
same hyper-parameters, real Fashion-MNIST batches read from the Debian package's IDX file, and the
same intra-op thread count. Prints one JSON line: images per second over the timed steps, and
the step's FLOP count per image (derived below) with the device's measured matmul GFLOP/s.

Debian's python3-torch is the same LibTorch (1.13) that gantry links, so the difference is the
framework around the kernels. On a GPU machine (--device cuda, optionally --precision bf16: autocast
around the forward passes, losses in fp32, as gantry's train.precision) it runs against that
machine's PyTorch; --warmup steps are left out of the timing there (CUDA start-up, cuDNN's choice).

    /usr/bin/python3 bench/pytorch_reference.py --arch mlp --batch 64 --threads 1 --steps 150
    python3 bench/pytorch_reference.py --arch dcgan --batch 256 --device cuda --precision bf16 --steps 500 --warmup 100
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    return torch.from_numpy(pixels.copy())


def mlp(z_dim, width_out):
    g = nn.Sequential(nn.Linear(z_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                      nn.Linear(512, width_out), nn.Tanh())
    d = nn.Sequential(nn.Flatten(), nn.Linear(width_out, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256),
                      nn.LeakyReLU(0.2), nn.Linear(256, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
    return g, d


def dcgan(z_dim, w):
    g = nn.Sequential(nn.ConvTranspose2d(z_dim, 4 * w, 7, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
                      nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
                      nn.ConvTranspose2d(2 * w, 1, 4, 2, 1, bias=False), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(2 * w, 1, 7, 1, 0))
    for m in list(g.modules()) + list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g, d


def dcgan_step_flops(z_dim, w):
    """Multiply-adds x 2 of one image through one D update and one G update.

    Forward FLOPs per image: conv = 2 Cout Hout Wout Cin K^2, transposed conv = 2 Cin Hin Win Cout K^2
    (BatchNorm, activations and the loss are O(activations) and left out). Backward of a layer costs
    2x its forward (input gradient + weight gradient), 1x when only the input gradient is needed.
    D update: G forward on z (no grad), D forward on real and fake, D backward on both: G + 2D + 4D.
    G update: G forward, D forward, D backward for its input only (D is frozen), G backward:
    G + D + D + 2G. Total per image: 8 D + 4 G forwards.
    """
    g = (2 * z_dim * 1 * 1 * 4 * w * 7 * 7 +             # z (1x1) -> 4w x 7x7
         2 * 4 * w * 7 * 7 * 2 * w * 4 * 4 +             # -> 2w x 14x14
         2 * 2 * w * 14 * 14 * 1 * 4 * 4)                 # -> 1 x 28x28
    d = (2 * w * 14 * 14 * 1 * 4 * 4 +                    # 1 x 28x28 -> w x 14x14
         2 * 2 * w * 7 * 7 * w * 4 * 4 +                  # -> 2w x 7x7
         2 * 1 * 1 * 1 * 2 * w * 7 * 7)                   # -> 1 x 1x1
    return 8 * d + 4 * g


def mlp_step_flops(z_dim, image=784):
    """Multiply-adds x 2 of one image through one D update and one G update of the MLP GAN.

    A linear layer's forward is 2 in out FLOPs per image; its weight gradient costs as much, and so
    does its input gradient, which is not needed for the first layer of the network being updated
    (its input is data or z). Biases and activations are left out. D update: G forward (no grad),
    D forward on real and fake, weight gradients and input gradients but the first on both.
    G update: G forward, D forward, D's input gradients only (D is frozen, its input is G's
    output), G's weight gradients and its input gradients but the first.
    """
    g = [(z_dim, 256), (256, 512), (512, image)]
    d = [(image, 512), (512, 256), (256, 128), (128, 1)]
    fwd = lambda layers: sum(2 * i * o for i, o in layers)
    d_update = fwd(g) + 2 * (fwd(d) + fwd(d) + fwd(d[1:]))
    g_update = fwd(g) + fwd(d) + fwd(d) + fwd(g) + fwd(g[1:])
    return d_update + g_update


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device, dtype=torch.float32):
    size = 1024 if device.type == "cpu" else 8192
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    n, t0 = 20, time.perf_counter()
    for _ in range(n):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size ** 3 * n / (time.perf_counter() - t0) / 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["mlp", "dcgan"], required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--width", type=int, default=32, help="DCGAN g_width = d_width")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # gantry's train.deterministic: false
    z_dim = 100
    images = load_images(args.data)
    if device.type == "cuda":
        images = images.pin_memory()
    g, d = mlp(z_dim, 784) if args.arch == "mlp" else dcgan(z_dim, args.width)
    g, d = g.to(device), d.to(device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    if args.arch == "mlp":
        generate = lambda z: g(z).view(-1, 1, 28, 28)
    else:
        generate = lambda z: g(z.view(-1, z_dim, 1, 1))
    discriminate = lambda x: d(x).view(-1)
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    order = torch.randperm(images.shape[0])
    b = args.batch

    t0 = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            t0 = time.perf_counter()
        idx = order[(step * b) % (images.shape[0] - b):][:b]
        real = images[idx].to(device, non_blocking=True).float().div_(127.5).sub_(1)
        # D update: real and detached fakes; forward passes under autocast, losses in fp32.
        z = torch.randn(b, z_dim, device=device)
        with autocast():
            with torch.no_grad():
                fake = generate(z)
            real_logits, fake_logits = discriminate(real).float(), discriminate(fake).float()
        d_opt.zero_grad()
        d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        d_loss.backward()
        d_opt.step()
        # G update through a frozen D.
        for q in d.parameters():
            q.requires_grad_(False)
        g_opt.zero_grad()
        with autocast():
            logits = discriminate(generate(torch.randn(b, z_dim, device=device))).float()
        g_loss = F.softplus(-logits).mean()
        g_loss.backward()
        g_opt.step()
        for q in d.parameters():
            q.requires_grad_(True)
    synchronize(device)
    seconds = time.perf_counter() - t0
    out = {"arch": args.arch, "batch": b, "threads": args.threads, "device": args.device,
           "precision": args.precision, "steps": args.steps, "seconds": seconds,
           "img_per_s": args.steps * b / seconds, "torch": torch.__version__,
           "final_losses": [float(d_loss), float(g_loss)]}
    flops = dcgan_step_flops(z_dim, args.width) if args.arch == "dcgan" else mlp_step_flops(z_dim)
    out["step_gflop_per_image"] = flops / 1e9
    out["matmul_gflops"] = matmul_gflops(
            device, torch.bfloat16 if args.precision == "bf16" and device.type == "cuda" else torch.float32)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
