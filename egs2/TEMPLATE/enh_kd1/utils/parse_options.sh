#!/usr/bin/env bash
# Source this after setting defaults: every `--some-name value` or `--some_name=value` on the command
# line sets the shell variable some_name, which must already exist (a typo stops the script).
# `--config FILE` sources FILE first (lines of `name=value`). `--help`/`-h` prints $help_message.
# Parsing stops at the first argument that is not an option; the rest stays in "$@".

while true; do
    [ -z "${1:-}" ] && break
    case "$1" in
        --help|-h)
            printf '%s\n' "${help_message:-No help available.}" 1>&2
            exit 0 ;;
        --config)
            [ -f "${2:-}" ] || { echo "$0: --config: no such file '${2:-}'" 1>&2; exit 1; }
            # shellcheck disable=SC1090
            . "$2"
            shift 2 ;;
        --*=*)
            __name=${1%%=*}; __name=${__name#--}; __name=${__name//-/_}
            __value=${1#*=}
            if [ -z "${!__name+set}" ]; then
                echo "$0: invalid option $1 (no variable '${__name}' to set)" 1>&2; exit 1
            fi
            printf -v "${__name}" '%s' "${__value}"
            shift ;;
        --*)
            __name=${1#--}; __name=${__name//-/_}
            if [ -z "${!__name+set}" ]; then
                echo "$0: invalid option $1 (no variable '${__name}' to set)" 1>&2; exit 1
            fi
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" 1>&2; exit 1
            fi
            # Boolean variables accept only true/false, as in Kaldi.
            __old=${!__name}
            if { [ "${__old}" = true ] || [ "${__old}" = false ]; } && [ "$2" != true ] && [ "$2" != false ]; then
                echo "$0: option $1 expects true or false, got '$2'" 1>&2; exit 1
            fi
            printf -v "${__name}" '%s' "$2"
            shift 2 ;;
        *) break ;;
    esac
done
unset __name __value __old
true
