# polar-gateway image: builds the gateway from source on Debian 12 (the
# distribution CI builds and tests on) and runs it on Debian 12 slim with only
# the runtime libraries it links. The gateway holds no model and no GPU: it
# learns the tokenizer and model facts from the workers.
#
#   docker build -f deploy/gateway.Dockerfile -t polar-gateway .   # from the repository root
#   docker run --rm -p 50051:50051 -p 9090:9090 polar-gateway --workers dns:///polar-worker:50052
#
# The runtime packages are the Debian packages of the libraries the binary
# names directly (its DT_NEEDED entries; apt brings their own dependencies);
# tests/deploy/obs_dockerfiles_test.py checks that list against the binary
# built here. Runs as uid 10001 (polar).

ARG DEBIAN_VERSION=12.11

FROM debian:${DEBIAN_VERSION} AS build
ARG BUILD_JOBS=
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libopenblas-openmp-dev libcpp-httplib-dev nlohmann-json3-dev libicu-dev libc-ares-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads. The engine library is configured too (the
# gateway uses its tokenizer), hence OpenBLAS above, though the gateway binary
# does not link it.
COPY CMakeLists.txt ./
COPY kernels kernels
COPY engine engine
COPY proto proto
COPY services services
COPY tools tools
COPY bench bench
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DPOLAR_BUILD_TESTS=OFF -DPOLAR_BUILD_FUZZERS=OFF -DPOLAR_BUILD_SERVICES=ON -DPOLAR_BUILD_CUDA=OFF \
 && cmake --build build -j "${BUILD_JOBS:-$(nproc)}" --target polar-gateway

FROM debian:${DEBIAN_VERSION}-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 libc-ares2 libcpp-httplib0.11 libgrpc++1.51 libgrpc29 libicu72 libprotobuf32 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 polar \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin polar
COPY --from=build /src/build/bin/polar-gateway /opt/polar/bin/polar-gateway
RUN /opt/polar/bin/polar-gateway --version >/dev/null
ENV PATH=/opt/polar/bin:${PATH}
USER 10001:10001
# Public gRPC API (polar.v1.Gateway, grpc.health.v1, reflection) and /metrics.
EXPOSE 50051 9090
ENTRYPOINT ["/opt/polar/bin/polar-gateway"]
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]
