# syntax=docker/dockerfile:1
#
# milvus-ha-proxy: a static binary on distroless, running as non-root.
#
#   docker build -t milvus-ha-proxy .
#   docker run -v $PWD/config.yaml:/etc/milvus-ha-proxy/config.yaml:ro \
#       -p 19530:19530 -p 9091:9091 milvus-ha-proxy
#
# Extra arguments are appended to `serve` (the last occurrence of a flag
# wins), e.g. `docker run ... milvus-ha-proxy --log-format json --check`.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module cache.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w" -o /out/milvus-ha-proxy ./cmd/milvus-ha-proxy

# distroless/static: CA certificates and tzdata, no shell, no package
# manager; the :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/milvus-ha-proxy /milvus-ha-proxy
USER 65532:65532
# gRPC for Milvus clients, admin HTTP (/metrics, /healthz, /readyz, /api/v1).
EXPOSE 19530 9091
# Liveness: `status` exits 1 when the admin API does not answer, 0 when it
# does (also while no leader is known: use /readyz for readiness, e.g. a
# Kubernetes readinessProbe on httpGet :9091/readyz). Distroless has no
# curl, so the binary checks itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/milvus-ha-proxy", "status", "--admin", "127.0.0.1:9091", "--timeout", "3s"]
# The ports are fixed here so that EXPOSE and HEALTHCHECK hold: inside a
# container both listen on all interfaces (a 127.0.0.1 admin port could
# not be scraped or probed from outside). They override listen and
# admin_listen in the file; keep the admin port on a private network.
ENTRYPOINT ["/milvus-ha-proxy", "serve", "--config", "/etc/milvus-ha-proxy/config.yaml", "--listen", "0.0.0.0:19530", "--admin-listen", "0.0.0.0:9091"]
