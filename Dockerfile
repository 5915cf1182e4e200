# One image runs the operator (`controller`) and the injected sidecar (`sidecar`).
# Build: docker build -t ghcr.io/mtls-operator/mtls-operator:0.1.0 .
# Without a registry, `npm run image` builds it with buildah on a local stand-in for BASE.
ARG BASE=node:24.21.0-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY common ./common
COPY operator ./operator
COPY sidecar ./sidecar
# The local-cluster tooling (dev, controlplane, image) is compiled in because the CLI dispatches to it.
COPY local ./local
RUN node_modules/.bin/tsc -p tsconfig.build.json

FROM ${BASE}
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY crds ./crds
# Non-root; group 0 reads the sidecar's Secret volume (mode 0440, root-owned files), as the injector sets it.
USER 65532:0
ENTRYPOINT ["node", "/app/dist/operator/cli.js"]
CMD ["--help"]
