# Baton coordinator image, built from this repository.
#
#   docker build -t baton-coordinator .               # the daemon (default target)
#   docker build -t baton-bench --target bench .      # the load tester (cmd/bench)
#
# docker-compose.yml builds both.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so code changes do not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/coordinator ./cmd/coordinator

FROM build AS bench-build
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/bench ./cmd/bench

FROM gcr.io/distroless/static-debian12:nonroot AS bench
COPY --from=bench-build /out/bench /usr/local/bin/bench
ENTRYPOINT ["/usr/local/bin/bench"]

# The daemon: the last stage, so a plain `docker build` makes it.
FROM gcr.io/distroless/static-debian12:nonroot AS coordinator
COPY --from=build /out/coordinator /usr/local/bin/coordinator
# Inside a container the API must listen beyond loopback to be reachable;
# publish the port on the host's loopback only (see docker-compose.yml) or
# set BATON_HTTP_AUTH_TOKEN.
ENV BATON_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/coordinator"]
CMD ["serve"]
