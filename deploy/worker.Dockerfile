# polar-worker image: builds the worker (and the polar CLI, for calibration
# jobs and smoke tests) from source on NVIDIA's CUDA devel image and runs it
# on the CUDA runtime image of the same version and Ubuntu release.
#
#   docker build -f deploy/worker.Dockerfile -t polar-worker .     # from the repository root
#   docker run --rm -v "$PWD/.cache/models:/models:ro" -p 50052:50052 -p 9091:9091 polar-worker
#
# The worker computes on the CPU backend today (--device cpu is its only
# device until the CUDA backend lands); the CUDA base is here so the image,
# the compose GPU profile and the Kubernetes GPU overlay are ready for it.
# POLAR_BUILD_CUDA=ON also compiles the CUDA kernels (not yet linked into the
# worker); it is off by default because nothing in the image uses them yet.
#
# The runtime stage installs no packages: the builder copies the exact shared
# libraries the binaries resolve to (ldd), so the two stages cannot drift
# apart. glibc and the CUDA libraries come from the runtime base image (the
# same Ubuntu and CUDA release as the builder); the driver library
# (libcuda.so) comes from the host through the NVIDIA container toolkit.
#
# Paths: binaries in /opt/polar/bin, their libraries in /opt/polar/lib, the
# model mounted at /models, routers at /routers. Runs as uid 10001 (polar).

ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
ARG POLAR_BUILD_CUDA=OFF
ARG BUILD_JOBS=
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libopenblas-openmp-dev libcpp-httplib-dev nlohmann-json3-dev libicu-dev libc-ares-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads (the tests, docs and deploy files stay out, so
# editing them does not invalidate this layer).
COPY CMakeLists.txt ./
COPY kernels kernels
COPY engine engine
COPY proto proto
COPY services services
COPY tools tools
COPY bench bench
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DPOLAR_BUILD_TESTS=OFF -DPOLAR_BUILD_FUZZERS=OFF -DPOLAR_BUILD_SERVICES=ON \
      -DPOLAR_BUILD_CUDA=${POLAR_BUILD_CUDA} \
 && cmake --build build -j "${BUILD_JOBS:-$(nproc)}" --target polar-worker polar
# Stage the binaries and every shared library they load, except glibc's own
# libraries and the CUDA libraries (provided by the runtime base / the host).
RUN mkdir -p /stage/bin /stage/lib \
 && cp build/bin/polar-worker build/bin/polar /stage/bin/ \
 && ldd /stage/bin/polar-worker /stage/bin/polar \
      | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
      | grep -Ev '/(ld-linux[^/]*|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil)\.so|/lib(cuda|cudart|cublas|cublasLt|nvrtc|nvJitLink)\.so' \
      | xargs -r cp -L -t /stage/lib/ \
 && ls /stage/lib

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
COPY --from=build /stage/bin/ /opt/polar/bin/
COPY --from=build /stage/lib/ /opt/polar/lib/
RUN echo /opt/polar/lib > /etc/ld.so.conf.d/polar.conf && ldconfig \
 && groupadd --gid 10001 polar \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin polar \
 && mkdir -p /models /routers \
 && /opt/polar/bin/polar-worker --help >/dev/null
ENV PATH=/opt/polar/bin:${PATH}
USER 10001:10001
# gRPC (polar.v1.Worker + grpc.health.v1) and Prometheus /metrics.
EXPOSE 50052 9091
# Kubernetes probes the gRPC health service (SERVING after the warm-up step,
# NOT_SERVING while draining); docker needs no HEALTHCHECK for that.
ENTRYPOINT ["/opt/polar/bin/polar-worker"]
CMD ["--model", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", \
     "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9091"]
