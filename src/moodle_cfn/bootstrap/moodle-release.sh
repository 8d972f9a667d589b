#!/bin/bash
# Which Moodle release a site runs, and which PHP runs it. Sourced by moodle-node-setup.sh (which defines
# log and die); the tests source it alone. Moodle's lines and their PHP ranges come from moodle-lines.json,
# the file `moodle-cfn validate` reads too.
# shellcheck disable=SC2034  # moodle_git_url is read by moodle-node-setup.sh

readonly moodle_git_url=https://github.com/moodle/moodle.git

# Is release $1 older than release $2? Numerically, field by field: 4.5.10 is newer than 4.5.9.
release_older() {
  [[ $1 != "$2" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" == "$1" ]]
}

# The newest stable release (a vX.Y.Z tag: never a beta or rc) of a line in the lines file that runs on
# PostgreSQL major $2, from `git ls-remote --tags --refs` output on stdin. Prints nothing when there is none.
latest_stable_release() {
  local lines_file=$1 postgresql=$2 lines
  lines=$(jq -r --argjson pg "$postgresql" \
    '.lines | to_entries | map(select(.value.postgresql <= $pg) | .key | gsub("\\."; "\\.")) | join("|")' \
    "$lines_file")
  [[ -n $lines ]] || return 0
  sed -nE "s#^[0-9a-f]+[[:space:]]+refs/tags/v(($lines)\.[0-9]+)\$#\1#p" | sort -V | tail -n 1
}

# The release a database's `release` setting names ("4.5 (Build: 20241007)", "4.5.3+ (Build: ...)"), as
# X.Y.Z; nothing for an empty input.
release_of_setting() {
  local setting=$1
  [[ $setting =~ ^([0-9]+)\.([0-9]+)(\.([0-9]+))? ]] || return 0
  printf '%s.%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]:-0}"
}

# MoodleVersion as the site runs it. `latest` is resolved once: by the first node of a new site (the newest
# stable release), or to what an existing database already runs (a site brought in from a snapshot is never
# upgraded by itself); the result is recorded and every later node installs exactly that, even when a newer
# release exists. An explicit release older than the recorded one or the database's is refused (a
# downgrade), before anything touches the database. Call it under a lock shared by the site's nodes.
#   $1 requested (MoodleVersion), $2 the record file, $3 the database's release (X.Y.Z) or "",
#   $4 the lines file, $5 the database's PostgreSQL major.
resolve_release() {
  local requested=$1 record=$2 installed=$3 lines_file=$4 postgresql=$5 recorded="" current
  [[ -s $record ]] && recorded=$(< "$record")
  if [[ $requested == latest ]]; then
    if [[ -z $recorded ]]; then
      if [[ -n $installed ]]; then
        log "MoodleVersion latest: the database already runs $installed; keeping it"
        recorded=$installed
      else
        local tags
        tags=$(git ls-remote --tags --refs "$moodle_git_url" 'v*') ||
          die "cannot list Moodle's releases at $moodle_git_url (set MoodleVersion to a release to skip this)"
        recorded=$(latest_stable_release "$lines_file" "$postgresql" <<< "$tags")
        [[ -n $recorded ]] || die "no stable release at $moodle_git_url of a Moodle line that runs on PostgreSQL $postgresql"
        log "MoodleVersion latest is $recorded (recorded for every later node of this site)"
      fi
      printf '%s\n' "$recorded" > "$record.partial"
      mv "$record.partial" "$record"
    fi
    printf '%s\n' "$recorded"
    return
  fi
  for current in "$recorded" "$installed"; do
    if [[ -n $current ]] && release_older "$requested" "$current"; then
      die "MoodleVersion $requested is older than the $current this site runs: Moodle cannot be downgraded." \
        "Set MoodleVersion to $current or newer; to go back, restore a database snapshot taken before the" \
        "upgrade (README: Roll back)"
    fi
  done
  printf '%s\n' "$requested"
}

# The PHP (X.Y) to run a release with: the newest version the platform packages inside the release line's
# supported range. $1 release, $2 lines file, $3... the platform's PHP versions.
php_for_release() {
  local release=$1 lines_file=$2
  shift 2
  local line=${release%.*} range
  range=$(jq -r --arg line "$line" '.lines[$line].php // empty | join(" ")' "$lines_file")
  [[ -n $range ]] || die "Moodle $line is not a line this moodle-cfn release knows ($lines_file)"
  local low=${range% *} high=${range#* } candidate chosen=""
  for candidate in $(printf '%s\n' "$@" | sort -V); do
    if ! release_older "$candidate" "$low" && ! release_older "$high" "$candidate"; then
      chosen=$candidate
    fi
  done
  [[ -n $chosen ]] || die "Moodle $line needs PHP $low-$high; this platform packages PHP $*"
  printf '%s\n' "$chosen"
}
