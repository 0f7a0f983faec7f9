#!/usr/bin/env bash
# Installs the Krasis systemd units on this host (see README.md, "Running across
# machines"):
#   binaries   build/bin/krasis-{loader,decode,prefill,gateway} (+ krasis, krasis-cli)
#              -> /usr/local/bin
#   helper     krasis-wait-ready -> /usr/local/libexec/krasis
#   units      krasis-*.service, krasis.target -> /etc/systemd/system
#   settings   env/<svc>.env -> /etc/krasis/<svc>.env.example, and <svc>.env when
#              missing (an edited <svc>.env is never overwritten)
#   user       the krasis system user and group (home /var/lib/krasis, no login),
#              in the video and render groups where those exist (GPU device nodes)
#   state      /var/lib/krasis/{models,cache} owned by krasis
# then `systemctl daemon-reload`. Idempotent: a second run changes nothing. It
# enables and starts nothing; its last lines say what to run.
#
#   deploy/systemd/install.sh [BUILD_DIR]      (default: $KRASIS_BUILD_DIR or build)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_dir=${1:-${KRASIS_BUILD_DIR:-build}}
case $build_dir in /*) ;; *) build_dir=$repo/$build_dir ;; esac
services=(loader decode prefill gateway)

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0)" >&2
  exit 1
fi
for svc in "${services[@]}"; do
  if [ ! -x "$build_dir/bin/krasis-$svc" ]; then
    echo "install.sh: $build_dir/bin/krasis-$svc is missing; build first (scripts/build)" >&2
    exit 1
  fi
done

changed=0
# put SRC DEST MODE [OWNER GROUP]: installs SRC as DEST unless DEST already equals it.
put() {
  local src=$1 dest=$2 mode=$3 owner=${4:-root} group=${5:-root}
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    chown "$owner:$group" "$dest"
    return
  fi
  install -D -m "$mode" -o "$owner" -g "$group" "$src" "$dest"
  echo "install.sh: wrote $dest"
  changed=1
}

# The user and group first: files below are owned by them.
if ! getent group krasis >/dev/null; then
  groupadd --system krasis
  echo "install.sh: created group krasis"
fi
if ! getent passwd krasis >/dev/null; then
  useradd --system --gid krasis --home-dir /var/lib/krasis --no-create-home \
    --shell /usr/sbin/nologin --comment "Krasis LLM services" krasis
  echo "install.sh: created user krasis"
fi
for group in video render; do
  if getent group "$group" >/dev/null && ! id -nG krasis | tr ' ' '\n' | grep -qx "$group"; then
    usermod -a -G "$group" krasis
    echo "install.sh: added krasis to group $group"
  fi
done

install -d -m 0750 -o krasis -g krasis /var/lib/krasis /var/lib/krasis/models /var/lib/krasis/cache
install -d -m 0750 -o root -g krasis /etc/krasis
install -d -m 0755 /usr/local/bin /usr/local/libexec/krasis

for svc in "${services[@]}"; do
  put "$build_dir/bin/krasis-$svc" "/usr/local/bin/krasis-$svc" 0755
done
for tool in krasis krasis-cli; do
  if [ -x "$build_dir/bin/$tool" ]; then put "$build_dir/bin/$tool" "/usr/local/bin/$tool" 0755; fi
done
put "$here/krasis-wait-ready" /usr/local/libexec/krasis/krasis-wait-ready 0755

for svc in "${services[@]}"; do
  put "$here/krasis-$svc.service" "/etc/systemd/system/krasis-$svc.service" 0644
  put "$here/env/$svc.env" "/etc/krasis/$svc.env.example" 0640 root krasis
  if [ ! -e "/etc/krasis/$svc.env" ]; then
    put "$here/env/$svc.env" "/etc/krasis/$svc.env" 0640 root krasis
  fi
done
put "$here/krasis.target" /etc/systemd/system/krasis.target 0644

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: systemctl daemon-reload done"
else
  echo "install.sh: systemd is not running here; run 'systemctl daemon-reload' on the host"
fi
if [ "$changed" -eq 0 ]; then echo "install.sh: everything was already up to date"; fi

cat <<'NEXT'
Next: edit /etc/krasis/<svc>.env (model folder, addresses), put models under
/var/lib/krasis/models (owned by krasis), then start
  all four on this host:   systemctl enable --now krasis.target
  or this host's share:    systemctl enable --now krasis-decode.service   (etc.)
and follow them with journalctl -u 'krasis-*' -f
NEXT
