#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use. Needs root.
# Services the packages would start (nginx, redis, nats) are kept from
# starting: the tests run their own copies inside network namespaces.
set -euo pipefail

packages=(
	iptables iproute2 util-linux procps   # interception, namespaces, setpriv/nsenter
	curl nghttp2-client                   # HTTP/1.1 and h2 clients, h2load
	redis-server redis-tools nats-server  # opaque and server-speaks-first peers
	openssl ca-certificates
	tcpdump                               # the end-to-end check that meshed traffic is encrypted
	nginx haproxy wrk                    # benchmark peers and load generator
	prometheus                            # promtool check metrics, and a real Prometheus beside mesh viz
	chromium                              # the dashboard test: Debian's Chromium driven by playwright-core
)
# Node.js usually comes with the machine (NodeSource's, npm included);
# Debian's npm would conflict with it, so it is asked for only without one.
command -v npm >/dev/null || packages+=(nodejs npm)

if [ "$(id -u)" -ne 0 ]; then
	echo "hack/deps.sh: installing packages needs root; run: sudo make deps" >&2
	exit 1
fi
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Go-built tools the suites run, at pinned versions, into /usr/local/bin.
install_go_tools() {
	local go=${GO:-go}
	command -v "$go" >/dev/null || go=/usr/local/go/bin/go
	if ! command -v h2spec >/dev/null; then
		echo "deps: installing h2spec (HTTP/2 conformance suite) from the Go module proxy"
		GOBIN=/usr/local/bin "$go" install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
	fi
}

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#packages[@]} packages present"
	install_go_tools
	exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 tells invoke-rc.d not to start services on install.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_go_tools
