#!/usr/bin/env python3
"""First-token latency of one initialised Claude CLI driven over pipes, after DELAY seconds idle.

    python3 benchmarks/idle_probe.py CLI MODEL_PORT DELAY   (MODEL_PORT: a prewarm-fake-model)
"""
import json, os, subprocess, sys, time, tempfile
cli, port, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
       "ANTHROPIC_API_KEY": "sk-fake", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
       "CLAUDE_CONFIG_DIR": tempfile.mkdtemp()}
p = subprocess.Popen([cli, "--output-format", "stream-json", "--verbose", "--input-format", "stream-json",
                      "--include-partial-messages", "--permission-prompt-tool", "stdio"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tempfile.mkdtemp(), bufsize=0)
p.stdin.write(b'{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}\n')
while b'control_response' not in p.stdout.readline(): pass
time.sleep(delay)
t0 = time.monotonic()
p.stdin.write(b'{"type":"user","message":{"role":"user","content":"hi"},"parent_tool_use_id":null,"session_id":"default"}\n')
first = None
while True:
    line = p.stdout.readline()
    if not line: break
    t = json.loads(line).get("type")
    if first is None and t in ("stream_event", "assistant"): first = time.monotonic() - t0
    if t == "result": break
print(f"delay {delay:5.1f} s: first token {first*1000:.0f} ms")
p.kill()
