# syntax=docker/dockerfile:1
# Sluice as a container: build with the dev tools, run with production dependencies only, as a
# non-root user. Configure it with SLUICE_* variables (SLUICE_PRESET, SLUICE_UPSTREAM, SLUICE_LIMIT,
# SLUICE_REDIS…) or a mounted file (SLUICE_CONFIG=/etc/sluice/sluice.yaml); see README "Running in containers".

FROM node:24-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so a source change does not reinstall them. --ignore-scripts: the "prepare"
# script builds, and the sources are not copied yet.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production \
    SLUICE_HOST=0.0.0.0 \
    SLUICE_PORT=8080
WORKDIR /app
# Owned by root and read-only for the process: the "node" user only reads the app.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config ./config
# Numeric, so Kubernetes' runAsNonRoot can verify it: uid/gid 1000 is the image's "node" user.
USER 1000:1000
EXPOSE 8080
# The slim image has no curl: ask Node. /_sluice/health means "process alive"; orchestrators that
# should wait for Redis too can probe /_sluice/ready instead (docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require(process.env.SLUICE_TLS_CERT?'https':'http').get({host:'127.0.0.1',port:process.env.SLUICE_PORT||8080,path:'/_sluice/health',rejectUnauthorized:false},(r)=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).setTimeout(2000,()=>process.exit(1))"]
# Node runs as PID 1 and handles SIGTERM/SIGINT itself (closes the server and the Redis connection).
ENTRYPOINT ["node", "dist/src/cli.js"]
