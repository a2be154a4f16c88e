# GPU serving image: vLLM (CUDA build) + llava-o1. Needs the NVIDIA container runtime on the host.
#   docker build -t llava-o1 .
#   docker run --gpus all -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface \
#       llava-o1 --model HuggingFaceTB/SmolVLM-Instruct
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY models ./models
COPY stage_search ./stage_search
COPY server ./server
COPY bench ./bench
COPY training ./training
# fleet: vllm-router, for the router pods of the fleet topology (same image, `vllm-router` entrypoint).
RUN pip install ".[gpu,fleet]"

EXPOSE 8000
ENTRYPOINT ["llava-o1", "serve", "--host", "0.0.0.0", "--port", "8000"]
