# syntax=docker/dockerfile:1
#
# The town container image: the control server (`gastown-container`, PID 1) plus what its
# agents need at run time: the Kilo CLI, git, the GitHub CLI and CA certificates.
# wrangler.toml's [[containers]] entry points here; `wrangler deploy` (and `wrangler dev` on a
# machine with Docker) builds it from the repository root as the build context.
# Cloudflare runs linux/amd64 images; wrangler passes `--platform linux/amd64` when it builds.
# Where no base image can be pulled, scripts/build-image builds it with podman from local
# stand-ins of the three bases (build arguments RUST_IMAGE, NODE_IMAGE, DEBIAN_IMAGE).
#
# Image size (uncompressed; 474 MB in all, measured on scripts/build-image's build):
#   Kilo CLI platform package   237 MB  (the kilo binary, a single-file Bun build: ~162 MB;
#                                        tree-sitter grammars: ~50 MB; web console: ~14 MB)
#   the apt layer               151 MB  (git with perl and libcurl; gh 39 MB; openssh-client;
#                                        ca-certificates)
#   debian:bookworm-slim        ~75 MB
#   gastown-container           7.7 MB  (release, stripped)
# Node.js is NOT in the runtime image: the `@kilocode/cli` npm package is only a Node wrapper
# that finds and spawns the platform binary; the control server runs that binary directly
# (KILO_BIN), so Node (~90 MB with ICU) stays in the install stage.
#
# Nothing secret is baked in: CONTAINER_TOKEN and GASTOWN_MODEL_API_KEY arrive at start-up
# from the Worker (Cloudflare secrets); GASTOWN_API_URL and the model URL too.
# Changes here must keep tests/tests/dockerfile.rs green (it checks this file against the
# project: binary, port, Kilo version pins, env var names, tool location, no secrets).

ARG KILO_VERSION=7.7.7
# The base images. These defaults are the production bases (wrangler deploy builds with them);
# scripts/build-image replaces them with local stand-ins on machines that cannot pull images.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Stage 1: build the control server (release) with the workspace's Cargo.lock.
# Bookworm to match the runtime's glibc. The full rust image has the C compiler and git that
# the build needs (git2 builds its bundled libgit2; reqwest's rustls uses ring).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Every workspace member must be present for cargo to load the workspace (only
# gastown-container and shared-types are compiled).
COPY Cargo.toml Cargo.lock ./
COPY shared-types shared-types
COPY container container
COPY worker worker
COPY cli cli
COPY tests tests
# The cache mounts keep the crate registry and compiled dependencies between builds (BuildKit,
# the default builder of Docker 23+), so a source change rebuilds only this workspace's crates.
# target/ is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=gastown-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=gastown-target,target=/src/target,sharing=locked \
    cargo build --release -p gastown-container --locked \
    && install -D -s -m 0755 target/release/gastown-container /out/gastown-container

# ---------------------------------------------------------------------------------------------
# Stage 2: install the Kilo CLI with npm, pinned (same pins as package.json). npm may skip
# optional dependencies, so the Linux x64 platform package, which holds the real binary, is
# installed explicitly. (On a CPU without AVX2 the npm wrapper would pick
# @kilocode/cli-linux-x64-baseline; Cloudflare's hosts have AVX2.)
FROM ${NODE_IMAGE} AS kilo
ARG KILO_VERSION
WORKDIR /opt/kilo
RUN npm install --no-save --no-audit --no-fund --ignore-scripts \
        "@kilocode/cli@${KILO_VERSION}" "@kilocode/cli-linux-x64@${KILO_VERSION}" \
    && test -x node_modules/@kilocode/cli-linux-x64/bin/kilo

# ---------------------------------------------------------------------------------------------
# Stage 3: the runtime image.
FROM ${DEBIAN_IMAGE}

# git: clones, fetches and worktrees (the control server runs the git CLI);
# openssh-client: ssh:// and git@ remotes; ca-certificates: HTTPS to GitHub, the Worker and
# the model provider; gh: the GitHub CLI agents use for pull requests (Debian's package: no
# extra apt repository or key; for a newer gh use GitHub's own apt repository).
# Versions are not pinned: Debian replaces superseded versions in bookworm-security.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git openssh-client gh \
    && rm -rf /var/lib/apt/lists/*

# Only the platform package is copied: it holds the kilo binary and, beside it, the
# tree-sitter grammars the binary looks for next to itself.
COPY --from=kilo /opt/kilo/node_modules/@kilocode/cli-linux-x64 /opt/kilo/node_modules/@kilocode/cli-linux-x64
RUN ln -s /opt/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo /usr/local/bin/kilo

COPY --from=build /out/gastown-container /usr/local/bin/gastown-container

# Agents run repository code. The control server runs as root (PID 1) so that it can start
# every Kilo process under its own unprivileged uid (AGENT_UID_BASE.., no passwd entry needed):
# agents cannot read each other's files or any other process's environment. /workspace is
# enterable, not listable, by those uids.
RUN mkdir -p /workspace \
    && chmod 0711 /workspace

# The Gastown tool files for Kilo (tool/gt_*.js), written by the binary that serves them, so
# tools and control server always match (this step also proves the binary runs in this image);
# every agent's Kilo finds them through GASTOWN_TOOLS_DIR (readable by all; the server rewrites
# them at start-up).
RUN gastown-container write-tools /opt/gastown/tools

# Non-secret settings (the control server's defaults are right for everything not set here;
# container/src/config.rs lists them all). ALLOW_LOCAL_REPOS stays off in the image.
ENV WORKSPACE_ROOT=/workspace \
    KILO_BIN=/opt/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo \
    GASTOWN_TOOLS_DIR=/opt/gastown/tools

# No USER: the server stays root to hand each agent its own uid (see above).
WORKDIR /workspace
# The control server's port (PORT, default 8080), which the TownContainer DO connects to.
# `wrangler dev` refuses to run a container image that exposes no port.
EXPOSE 8080

# Exec form: the control server is PID 1 and receives SIGTERM directly (a shell would swallow
# it); it handles SIGTERM itself (PID 1 gets no default signal actions): it saves its agents'
# unpushed work (SHUTDOWN_DRAIN_MS), then stops them.
# As PID 1 it inherits every orphaned process, and its reaper thread reaps every exited child,
# agents' grandchildren included, so no init (tini, dumb-init, --init) is needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gastown-container"]
