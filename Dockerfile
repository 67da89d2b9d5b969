# The libvirt-operator agent image (manifests/base/daemonset.yaml runs it on every libvirt host).
# Build from the repository root:
#   docker build -t libvirt-operator:0.1.0 .
# Two stages: the first compiles the native libvirt addon and the TypeScript with the
# toolchain and libvirt's headers; the second carries only Node, the libvirt client library
# and what the first produced. libvirtd itself runs on the host, not in this image: so do
# QEMU's firmware and TPM emulator, and the host (not this image) needs Debian's ovmf for
# firmware: uefi and swtpm + swtpm-tools for tpm (docs/deploy.md, Requirements).

FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-dev pkg-config python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change reuses this layer. No install scripts: the
# addon is compiled below once its sources are there, and esbuild's (tsx, dev only) is unused.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY binding.gyp tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY crds ./crds
# --nodedir: Node's headers come from the image (/usr/local/include/node), not a download.
RUN npx --no-install node-gyp rebuild --nodedir=/usr/local \
 && npx --no-install tsc -p tsconfig.build.json \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
# libvirt0: the client library the addon links against. genisoimage: cloud-init NoCloud ISOs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 genisoimage \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/libvirt-operator
ENV NODE_ENV=production
# The layout the code expects: dist/libvirt/addon.js finds the addon two levels up, in
# build/Release/, and package.json marks the package root.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/Release/libvirt_native.node ./build/Release/libvirt_native.node
COPY --from=build /src/crds ./crds
RUN chmod 0755 dist/cli.js \
 && ln -s /opt/libvirt-operator/dist/cli.js /usr/local/bin/libvirt-operator
# Root: the agent talks to libvirtd's root-only read-write socket (see the DaemonSet).
USER 0
ENTRYPOINT ["libvirt-operator"]
CMD ["run"]
