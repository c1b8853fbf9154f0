# meshwrap container image: one static binary in an empty image.
#
# Builds with no registry at all (FROM scratch pulls nothing). Build the
# static binary on the host first, then the image:
#
#   cargo build --profile dist --locked --target x86_64-unknown-linux-musl --bin meshwrap
#   podman build -t localhost/meshwrap:dev .          # or: docker build …
#
# or, where the musl route is not available (see README.md, "Kubernetes
# sidecar and container image"), a static glibc binary:
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --profile dist --locked --target x86_64-unknown-linux-gnu --bin meshwrap
#   podman build --build-arg BIN=target/x86_64-unknown-linux-gnu/dist/meshwrap \
#     -t localhost/meshwrap:dev .
#
# No `# syntax=` line on purpose: BuildKit would try to pull that frontend.
# Dockerfile.build is the same image with a builder stage, for people who
# can pull rust:1.91.
#
# No CA bundle: mocked TLS services are answered with certificates of
# meshwrap's own CA (exported with --ca-export), and a TLS connection that
# is passed out is spliced byte for byte, so meshwrap never verifies a
# server certificate itself.
FROM scratch
ARG BIN=target/x86_64-unknown-linux-musl/dist/meshwrap
COPY ${BIN} /usr/local/bin/meshwrap
# No USER line: the manifests under deploy/ set runAsUser for each container
# (0 for sidecar-init, 1337 for sidecar), and `meshwrap --unmatched refuse
# -- CMD` style runs decide their own user.
ENTRYPOINT ["/usr/local/bin/meshwrap"]
