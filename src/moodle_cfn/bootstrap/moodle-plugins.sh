#!/bin/bash
# Moodle plugins, each pinned: a git source at a commit, or an S3 archive with its SHA-256. Sourced by
# moodle-node-setup.sh (which defines log and die, and AWS_REGION comes from the site settings); the tests
# source it alone.

# A git source at a pinned commit: a git URL (a mirror, or the code host), or an S3 object holding a git
# bundle (`git bundle create`) for VPCs without egress to a code host. git checks every object's hash,
# and the commit is checked after checkout.
fetch_pinned_git() {
  local source=$1 commit=$2 destination=$3 work=$4
  if [[ $source == s3://* ]]; then
    aws s3 cp --quiet --region "$AWS_REGION" "$source" "$work/source.bundle" ||
      die "cannot download $source"
    source=$work/source.bundle
  fi
  git clone --quiet --no-checkout "$source" "$destination" || die "cannot clone $source"
  git -C "$destination" -c advice.detachedHead=false checkout --quiet "$commit" ||
    die "$source has no commit $commit"
  [[ "$(git -C "$destination" rev-parse HEAD)" == "$commit" ]] || die "$source did not give commit $commit"
  rm -rf "$destination/.git"
}

# An S3 archive pinned by its SHA-256: a .zip or .tar.gz with one top directory, as moodle.org ships
# plugins. Its content becomes the directory $3.
fetch_pinned_archive() {
  local source=$1 digest=$2 destination=$3 work=$4 archive unpacked
  archive=$work/plugin-archive
  unpacked=$(mktemp -d "$work/unpacked-XXXXXX")
  aws s3 cp --quiet --region "$AWS_REGION" "$source" "$archive" || die "cannot download $source"
  echo "$digest  $archive" | sha256sum -c --quiet - || die "$source does not match its sha256 $digest"
  case $source in
    *.zip) unzip -q "$archive" -d "$unpacked" ;;
    *) tar -xzf "$archive" -C "$unpacked" ;;
  esac
  local top=("$unpacked"/*)
  [[ ${#top[@]} == 1 && -d ${top[0]} ]] || die "$source must hold exactly one top directory"
  mv "${top[0]}" "$destination"
  rm -rf "$archive" "$unpacked"
}

# The operator's plugins (MoodlePlugins, a JSON list): each a git source at a commit, or an S3 archive
# with its SHA-256. A plugin goes where Moodle's lib/components.json puts its type (or to its `path`, for
# subplugin types), never over code that is already there, and must declare the component it is listed as.
#   $1 Moodle's code tree, $2 a work directory, $3 the list, $4 the application cache engine.
add_plugins() {
  local moodle=$1 work=$2 plugins=$3 application_cache=$4 root=$1 entry index=0
  [[ -d $moodle/public ]] && root=$moodle/public
  jq -e 'type == "array"' <<< "$plugins" > /dev/null 2>&1 || die "MoodlePlugins is not a JSON list"
  if [[ $application_cache == memcached ]] &&
    ! jq -e 'any(.[]; .component == "cachestore_memcached")' <<< "$plugins" > /dev/null; then
    die "MoodlePlugins has no cachestore_memcached, which a memcached application cache needs (README: Plugins)"
  fi
  while IFS= read -r entry; do
    local component type path target
    component=$(jq -r '.component // ""' <<< "$entry")
    [[ $component =~ ^[a-z][a-z0-9]*_[a-z0-9_]+$ ]] ||
      die "MoodlePlugins[$index]: component ${component:-(none)} is not a Moodle component name such as mod_attendance"
    type=${component%%_*}
    path=$(jq -r '.path // ""' <<< "$entry")
    if [[ -z $path ]]; then
      # lib/components.json is at the code's top in every layout; from Moodle 5.1 its paths start with
      # public/, where the web-facing code and the plugins are.
      path=$(jq -r --arg type "$type" '.plugintypes[$type] // ""' "$moodle/lib/components.json")
      [[ -n $path ]] || die "MoodlePlugins[$index]: Moodle has no plugin type $type; give the plugin's path"
      path=${path#public/}/${component#*_}
    fi
    [[ $path =~ ^[a-z0-9_]+(/[a-z0-9_]+)*$ ]] || die "MoodlePlugins[$index]: $path is not a directory inside Moodle"
    target=$root/$path
    [[ -d $(dirname "$target") ]] || die "MoodlePlugins[$index]: Moodle has no directory $(dirname "$path")"
    [[ ! -e $target ]] || die "MoodlePlugins[$index]: $path is already in Moodle's code"
    local git commit s3 digest
    git=$(jq -r '.git // ""' <<< "$entry") commit=$(jq -r '.commit // ""' <<< "$entry")
    s3=$(jq -r '.s3 // ""' <<< "$entry") digest=$(jq -r '.sha256 // ""' <<< "$entry")
    if [[ -n $git && $commit =~ ^[0-9a-f]{40}$ && -z $s3 ]]; then
      log "adding $component $commit from $git into $path"
      fetch_pinned_git "$git" "$commit" "$target" "$work"
    elif [[ $s3 == s3://* && $digest =~ ^[0-9a-f]{64}$ && -z $git ]]; then
      log "adding $component from $s3 (sha256 $digest) into $path"
      fetch_pinned_archive "$s3" "$digest" "$target" "$work"
    else
      die "MoodlePlugins[$index] ($component): give git with a 40-character commit, or s3 with its sha256"
    fi
    # $plugin->component = 'the_component'; (either quote)
    grep -Eq "[>]component[[:space:]]*=[[:space:]]*.$component.[[:space:]]*;" "$target/version.php" ||
      die "MoodlePlugins[$index]: $path/version.php does not declare the component $component"
    index=$((index + 1))
  done < <(jq -c '.[]' <<< "$plugins")
}
