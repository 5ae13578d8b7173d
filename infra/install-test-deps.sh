#!/usr/bin/env bash
# Installs what KeyTrail's integration tests need on Debian 12, only what is missing,
# and pre-fetches the Kafka broker jars so the first pytest run does not pay for it.
# Safe to run again: a second run installs nothing and fetches nothing.
#
#   PostgreSQL server   postgresql       tests/infra/postgres.py runs a throwaway cluster
#   kcat                kcat             the wire-contract test produces with it
#   docker-compose      docker-compose   optional: only validates docker-compose.yml (`config`)
#   Java 17, Maven      openjdk-17-jre-headless, maven   run and fetch the Kafka broker
#   Chromium            chromium         the dashboard's browser tests (Playwright drives Debian's build)
#
# Needs root (or sudo) only when something must be installed. No Docker engine needed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom="$repo/infra/kafka/pom.xml"

say() { printf 'install-test-deps: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root to run: $*"; return 1
    fi
}

has_postgres_server() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null; }
has_kcat() { command -v kcat >/dev/null || command -v kafkacat >/dev/null; }
has_compose() { command -v docker-compose >/dev/null; }
has_java() { command -v java >/dev/null; }
has_maven() { command -v mvn >/dev/null; }
has_chromium() { [ -x /usr/bin/chromium ]; }

required=()
optional=()
check() { # check <description> <test function> <package> required|optional
    if "$2"; then say "$1: present"; elif [ "$4" = required ]; then required+=("$3"); say "$1: missing, will install $3"
    else optional+=("$3"); say "$1: missing, will try to install $3 (optional)"; fi
}
check "PostgreSQL server" has_postgres_server postgresql required
check "kcat" has_kcat kcat required
check "docker-compose" has_compose docker-compose optional
check "Java runtime" has_java openjdk-17-jre-headless required
check "Maven" has_maven maven required
check "Chromium" has_chromium chromium required

if [ ${#required[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    # Installing postgresql must not start the distribution's own cluster on port 5432:
    # a policy-rc.d that says "no" (exit 101) keeps services from starting during the install.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && own_policy=1
    fi
    drop_policy() { if [ "$own_policy" = 1 ]; then as_root rm -f "$policy"; fi; }
    trap drop_policy EXIT
    apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
    if [ ${#required[@]} -gt 0 ]; then
        say "apt-get install ${required[*]}"
        apt_install "${required[@]}"
    fi
    for package in "${optional[@]}"; do
        if apt_install "$package"; then say "installed $package"
        else say "WARNING: could not install $package; the tests that need it will skip"; fi
    done
fi

# Kafka jars: the same cache and the same all-or-nothing rename as tests/infra/kafka.py.
version=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$pom" | head -n 1)
cache=${KEYTRAIL_KAFKA_CACHE:-$HOME/.cache/keytrail/kafka-$version}
if [ -d "$cache/libs" ]; then
    say "Kafka $version jars: cached in $cache/libs"
else
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    if [ -d "$cache/libs" ]; then
        say "Kafka $version jars: cached in $cache/libs"
    else
        say "Kafka $version jars: fetching from Maven Central into $cache/libs"
        rm -rf "$cache"/libs.partial-*
        scratch=$(mktemp -d "$cache/libs.partial-XXXXXXXX")
        mvn_log=$(mktemp)
        if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$scratch" >"$mvn_log" 2>&1 \
            || ! compgen -G "$scratch/kafka_2.13-*.jar" >/dev/null; then
            tail -n 40 "$mvn_log" >&2
            rm -rf "$scratch" "$mvn_log"
            say "ERROR: fetching the Kafka jars failed"
            exit 1
        fi
        rm -f "$mvn_log"
        mv -T "$scratch" "$cache/libs"
        say "Kafka $version jars: $(find "$cache/libs" -name '*.jar' | wc -l) jars fetched"
    fi
    exec 9>&-
fi
say "done"
