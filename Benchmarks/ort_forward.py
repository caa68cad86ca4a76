#!/usr/bin/env python3
"""Forward-pass throughput of one ONNX model in ONNX Runtime (CPU), for comparison with LANCE.

    python ort_forward.py MODEL.onnx IMAGES.npy BATCH WARMUP ITERATIONS

Same measurement as lance-forward-bench: the batch is built from the rows of IMAGES.npy taken
cyclically (batch 32 from 20 images = the 20 images, then the first 12 again); after WARMUP untimed
runs, each of ITERATIONS runs of the whole batch is timed. Prints on stdout

    onnxruntime batch=32 images_per_s=... median_ms=... min_ms=... warmup=... iterations=... threads=... cpu_s=...

(cpu_s: CPU time, user + system, of all threads of the process.)

The session uses the default CPU execution provider and default graph optimisations, with
intra-op threads = the number of cores this process may run on.
"""
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) != 6:
        print("usage: ort_forward.py MODEL.onnx IMAGES.npy BATCH WARMUP ITERATIONS", file=sys.stderr)
        return 64
    model_path, data_path = argv[1], argv[2]
    batch, warmup, iterations = int(argv[3]), int(argv[4]), int(argv[5])
    if batch < 1 or warmup < 0 or iterations < 1:
        print("ort_forward.py: BATCH and ITERATIONS must be >= 1, WARMUP >= 0", file=sys.stderr)
        return 64

    images = np.load(data_path)
    if images.dtype != np.float32 or images.ndim != 4:
        print(f"ort_forward.py: {data_path}: expected float32 [N,C,H,W], got {images.dtype} {images.shape}",
              file=sys.stderr)
        return 1
    batch_input = np.ascontiguousarray(np.take(images, np.arange(batch) % images.shape[0], axis=0))

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    feed = {input_name: batch_input}

    for _ in range(warmup):
        session.run(None, feed)
    milliseconds = []
    output = None
    for _ in range(iterations):
        start = time.perf_counter()
        output = session.run(None, feed)[0]
        milliseconds.append((time.perf_counter() - start) * 1e3)
    if output.shape[0] != batch:
        print(f"ort_forward.py: output has shape {output.shape}, expected batch {batch} first", file=sys.stderr)
        return 1

    median = statistics.median(milliseconds)
    print(f"onnxruntime batch={batch} images_per_s={batch / (median / 1e3):.2f} median_ms={median:.3f}"
          f" min_ms={min(milliseconds):.3f} warmup={warmup} iterations={iterations} threads={threads}"
          f" cpu_s={time.process_time():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
