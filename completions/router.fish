# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_router_global_optspecs
    string join \n config= store= h/help V/version
end

function __fish_router_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_router_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_router_using_subcommand
    set -l cmd (__fish_router_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c router -n "__fish_router_needs_command" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_needs_command" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_needs_command" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_needs_command" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_needs_command" -f -a "serve" -d 'Run the proxy'
complete -c router -n "__fish_router_needs_command" -f -a "config" -d 'Check and summarise the configuration'
complete -c router -n "__fish_router_needs_command" -f -a "balance" -d 'Upstream credit per channel and key'
complete -c router -n "__fish_router_needs_command" -f -a "channels" -d 'List, show, add, enable, disable and remove channels (store channels; YAML ones read-only)'
complete -c router -n "__fish_router_needs_command" -f -a "import" -d 'Import channels from another gateway\'s database'
complete -c router -n "__fish_router_needs_command" -f -a "test" -d 'Check endpoints, keys, models and routes end to end (exit 1 when anything failed)'
complete -c router -n "__fish_router_needs_command" -f -a "usage" -d 'Token and cost totals from the store, grouped by day, channel, endpoint, token, model or key'
complete -c router -n "__fish_router_needs_command" -f -a "requests" -d 'Recent request records; `requests show ID` for one with every attempt'
complete -c router -n "__fish_router_needs_command" -f -a "store" -d 'Store maintenance: save the records a server could not write (`store import-pending FILE`)'
complete -c router -n "__fish_router_needs_command" -f -a "discover" -d 'Ask every channel\'s keys which models they reach, and their prices'
complete -c router -n "__fish_router_needs_command" -f -a "tags" -d 'List tags, or show the candidates a model name or tag expression routes to'
complete -c router -n "__fish_router_needs_command" -f -a "keys" -d 'Gateway keys: create, list with spend, update, disable, revoke, rotate; hash or generate one for the config'
complete -c router -n "__fish_router_needs_command" -f -a "alerts" -d 'Webhook alerts: send a sample to each target'
complete -c router -n "__fish_router_needs_command" -f -a "generate" -d 'Write shell completions and man pages (used to refresh completions/ and man/)'
complete -c router -n "__fish_router_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand serve" -l listen -d 'Address to listen on (overrides server.listen), e.g. 127.0.0.1:4000 or 127.0.0.1:0 for any free port' -r
complete -c router -n "__fish_router_using_subcommand serve" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand serve" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand serve" -l allow-open -d 'Listen on a non-loopback address even though no gateway keys are configured'
complete -c router -n "__fish_router_using_subcommand serve" -l no-local -d 'In zero-config mode, do not probe local Ollama / LM Studio'
complete -c router -n "__fish_router_using_subcommand serve" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand serve" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Validate the configuration and print what it defines'
complete -c router -n "__fish_router_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from check" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from check" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from check" -l json -d 'Print the summary as JSON'
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate the configuration and print what it defines'
complete -c router -n "__fish_router_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -f -a "check" -d 'Ask each upstream key\'s provider for the credit left (exit 3 when any is below --below)'
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -f -a "history" -d 'Show past balance checks'
complete -c router -n "__fish_router_using_subcommand balance; and not __fish_seen_subcommand_from check history help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l channel -d 'Only this channel (repeat for several). Default: every enabled channel' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l below -d 'Exit with code 3 when any balance is below AMOUNT (compared in that balance\'s own currency)' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l timeout -d 'Bound on each request to a provider' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l concurrency -d 'Checks in flight at once' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l refresh -d 'Ask the providers even when a recent result is stored'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l validate -d 'Also check each key with a cheap request: ok, invalid, no quota, rate limited, unreachable'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -l json -d 'Print the results as JSON'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l channel -d 'Only this channel' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l since -d 'From this time on: YYYY-MM-DD, today, yesterday, a span back from now (7d, 24h, 30m) or RFC 3339' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l until -d 'Before this time, in the same forms (a date includes that whole day)' -r
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l utc -d 'Dates, days and times in UTC instead of local time'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -l json -d 'Print the results as JSON'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from history" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from help" -f -a "check" -d 'Ask each upstream key\'s provider for the credit left (exit 3 when any is below --below)'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from help" -f -a "history" -d 'Show past balance checks'
complete -c router -n "__fish_router_using_subcommand balance; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "list" -d 'List every channel: from the configuration file (read-only) and from the store'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "show" -d 'One channel in detail (keys as token names and fingerprints only)'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "enable" -d 'Enable a store channel'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "disable" -d 'Disable a store channel (requests no longer go to it)'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "remove" -d 'Remove a store channel'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "add" -d 'Add a store channel (asks for each field when run on a terminal without flags)'
complete -c router -n "__fish_router_using_subcommand channels; and not __fish_seen_subcommand_from list show enable disable remove add help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from list" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from list" -l json -d 'Print the channels as JSON'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from show" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from show" -l json -d 'Print the channel as JSON'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from enable" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from enable" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from enable" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from disable" -l reason -d 'Why (shown by `list` and `show`)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from disable" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from disable" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from disable" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from remove" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from remove" -s y -l yes -d 'Remove without asking'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l name -d 'Name (unique across the configuration file and the store; no `/`)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l protocol -d 'Wire protocol of the upstream' -r -f -a "openai\t''
anthropic\t''
azure\t''
gemini\t''"
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l base-url -d 'Base URL (default: the protocol\'s official API; required for azure)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l key -d 'An upstream key (repeatable). Prefer --key-env: command lines are visible to other local users' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l key-env -d 'Read an upstream key from this environment variable (repeatable)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l model -d 'A model id the channel serves (repeatable; a trailing `*` matches a prefix)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l priority -d 'Lower is tried first' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l weight -d 'Share of traffic inside a priority tier' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l tag -d 'A tag for routing by tag (repeatable)' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l api-version -d 'Azure `api-version`' -r
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "list" -d 'List every channel: from the configuration file (read-only) and from the store'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "show" -d 'One channel in detail (keys as token names and fingerprints only)'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Enable a store channel'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Disable a store channel (requests no longer go to it)'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a store channel'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a store channel (asks for each field when run on a terminal without flags)'
complete -c router -n "__fish_router_using_subcommand channels; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -f -a "oneapi" -d 'Import channels from a One-API or New-API database (SQLite file, mysql:// or postgres:// URL)'
complete -c router -n "__fish_router_using_subcommand import; and not __fish_seen_subcommand_from oneapi help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l flavor -d 'Which project wrote the database (default: detected from its columns)' -r -f -a "one-api\t''
new-api\t''"
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l prefix -d 'Prepended to every imported channel name' -r
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l dry-run -d 'Show what would be imported, change nothing'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -s y -l yes -d 'Import without asking'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l json -d 'Print the report as JSON'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -l reset-state -d 'On re-import, take each channel\'s enabled / disabled state from the database again, dropping what was set locally with `router channels enable|disable` (kept by default)'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from oneapi" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "oneapi" -d 'Import channels from a One-API or New-API database (SQLite file, mysql:// or postgres:// URL)'
complete -c router -n "__fish_router_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand test" -l model -d 'Only this model for the chat requests (implies --chat)' -r
complete -c router -n "__fish_router_using_subcommand test" -l concurrency -d 'Checks in flight at once' -r
complete -c router -n "__fish_router_using_subcommand test" -l timeout -d 'Bound on each request (and on each attempt of a routed request)' -r
complete -c router -n "__fish_router_using_subcommand test" -l strategy -d 'Strategy for model and tag targets (default: routing.strategy of the config)' -r
complete -c router -n "__fish_router_using_subcommand test" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand test" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand test" -l chat -d 'Also send a minimal real request (8 output tokens) to each model of the tested endpoints'
complete -c router -n "__fish_router_using_subcommand test" -l json -d 'Print the results as JSON'
complete -c router -n "__fish_router_using_subcommand test" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand test" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand usage" -l since -d 'From this time on: YYYY-MM-DD, today, yesterday, a span back from now (7d, 24h, 30m) or RFC 3339' -r
complete -c router -n "__fish_router_using_subcommand usage" -l until -d 'Before this time, in the same forms (a date includes that whole day)' -r
complete -c router -n "__fish_router_using_subcommand usage" -l group-by -d 'Group rows by these (repeatable, in order). `token` groups by key fingerprint and lists its names' -r -f -a "day\t''
hour\t'The hour (`YYYY-MM-DD HH:00`); when a range falls back to the daily rollups, the day\'s first hour'
channel\t''
endpoint\t''
token\t'The upstream key, by fingerprint (renaming its endpoint or channel keeps its history together)'
model\t''
key\t'The gateway key clients used'
session\t'The conversation (session hash); needs request records, not daily rollups'"
complete -c router -n "__fish_router_using_subcommand usage" -l channel -d 'Only this channel' -r
complete -c router -n "__fish_router_using_subcommand usage" -l token -d 'Only this upstream token (its name or fp:...)' -r
complete -c router -n "__fish_router_using_subcommand usage" -l model -d 'Only this model (requested or upstream)' -r
complete -c router -n "__fish_router_using_subcommand usage" -l key -d 'Only this gateway key' -r
complete -c router -n "__fish_router_using_subcommand usage" -l session -d 'Only this conversation: its session hash (16 hex digits, as listed) or its raw id (an X-Router-Session value, a Claude Code session id, a prompt_cache_key), which is hashed the same way' -r
complete -c router -n "__fish_router_using_subcommand usage" -l top -d 'Only the first N rows, largest first (by tokens unless `--sort` says otherwise), e.g. `--group-by session --top 10`' -r
complete -c router -n "__fish_router_using_subcommand usage" -l sort -d 'Order rows largest first by this' -r -f -a "tokens\t'All input (uncached, read, written) plus output'
cache-read\t'Cache reads'
cost\t''
requests\t''"
complete -c router -n "__fish_router_using_subcommand usage" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand usage" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand usage" -l utc -d 'Dates, days and times in UTC instead of local time'
complete -c router -n "__fish_router_using_subcommand usage" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand usage" -l csv -d 'Print CSV'
complete -c router -n "__fish_router_using_subcommand usage" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c router -n "__fish_router_using_subcommand usage" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -s n -l limit -d 'How many records to show' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l since -d 'From this time on: YYYY-MM-DD, today, yesterday, a span back from now (7d, 24h, 30m) or RFC 3339' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l until -d 'Before this time, in the same forms (a date includes that whole day)' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l channel -d 'Only this channel' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l token -d 'Only this upstream token (its name or fp:...)' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l model -d 'Only this model (requested or upstream)' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l key -d 'Only this gateway key' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l session -d 'Only this conversation: its session hash (16 hex digits, as listed) or its raw id (an X-Router-Session value, a Claude Code session id, a prompt_cache_key), which is hashed the same way' -r
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l utc -d 'Dates, days and times in UTC instead of local time'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'One request with every upstream attempt'
complete -c router -n "__fish_router_using_subcommand requests; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -l utc -d 'Times in UTC instead of local time'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from help" -f -a "show" -d 'One request with every upstream attempt'
complete -c router -n "__fish_router_using_subcommand requests; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -f -a "import-pending" -d 'Save the request records of pending files into the store (the files `serve` wrote when the store could not take them), then remove each file'
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -f -a "migrate" -d 'Copy a redb store (records, rollups, channels, keys, balances, discovery) into PostgreSQL, for `store.postgres`. Safe to run again: what is there already is not counted twice. Stop the `router serve` that holds the file first'
complete -c router -n "__fish_router_using_subcommand store; and not __fish_seen_subcommand_from import-pending migrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from import-pending" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from import-pending" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from import-pending" -l keep -d 'Keep each file after its records are saved'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from import-pending" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from import-pending" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -l from -d 'The redb store to copy (default: the store `--store` / ROUTER_STORE / store.path names)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -l to -d 'The PostgreSQL database (default: store.postgres of the configuration)' -r
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -l json -d 'Print what was copied as JSON'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from migrate" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "import-pending" -d 'Save the request records of pending files into the store (the files `serve` wrote when the store could not take them), then remove each file'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Copy a redb store (records, rollups, channels, keys, balances, discovery) into PostgreSQL, for `store.postgres`. Safe to run again: what is there already is not counted twice. Stop the `router serve` that holds the file first'
complete -c router -n "__fish_router_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand discover" -l channel -d 'Only this channel (repeatable)' -r
complete -c router -n "__fish_router_using_subcommand discover" -l concurrency -d 'Model lists fetched at the same time' -r
complete -c router -n "__fish_router_using_subcommand discover" -l timeout -d 'Bound on each model-list request, e.g. 20s (default: discovery.timeout of the config, else 20s)' -r
complete -c router -n "__fish_router_using_subcommand discover" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand discover" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand discover" -l json -d 'Print the report and the models found as JSON'
complete -c router -n "__fish_router_using_subcommand discover" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand discover" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -f -a "list" -d 'Every tag, with how many models carry it and on which channels'
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -f -a "query" -d 'The ordered candidates for a model name or tag expression, exactly as `serve` would try them'
complete -c router -n "__fish_router_using_subcommand tags; and not __fish_seen_subcommand_from list query help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -l channel -d 'Only this channel (repeatable)' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -l discover -d 'Discover models first (live, for this run only) instead of using stored results'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l strategy -d 'Strategy (default: routing.strategy): priority, weighted, fastest, cost_first, free_first, local_first, balanced' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l protocol -d 'The client\'s protocol: channels of the other protocol are excluded, as in `serve`' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l key -d 'Apply this gateway key\'s `allow` expression' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l pin -d 'Pin a channel or channel/endpoint, like the `X-Router-Channel` header' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l input-tokens -d 'Prompt size used to estimate cost (cost_first, balanced)' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l max-tokens -d 'Output size used to estimate cost (serve uses 1024 when the request gives none)' -r
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l embedding -d 'Plan an embeddings request instead of a chat request'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -l discover -d 'Discover models first (live, for this run only) instead of using stored results'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from query" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every tag, with how many models carry it and on which channels'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from help" -f -a "query" -d 'The ordered candidates for a model name or tag expression, exactly as `serve` would try them'
complete -c router -n "__fish_router_using_subcommand tags; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "create" -d 'Create a store key; prints its secret once (only its hash is stored)'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "list" -d 'Every key (configuration and store) with its limits, spend in the budget period, requests today, last use'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "show" -d 'One key in detail'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "update" -d 'Change a store key\'s settings (`none` removes a limit; `--allow \'\'` removes the allow expression)'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "disable" -d 'Stop accepting a store key until `enable`'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "enable" -d 'Accept a disabled store key again'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "revoke" -d 'Refuse a store key for good (its history stays); asks first unless --yes'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "rotate" -d 'A new secret for a store key: same name, settings and history; the old secret stops working'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "hash" -d 'Print `sha256:<hex>` of a gateway key (read from standard input when not given)'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "generate" -d 'Make a new random gateway key and print it with its hash (for `server.keys` in the configuration)'
complete -c router -n "__fish_router_using_subcommand keys; and not __fish_seen_subcommand_from create list show update disable enable revoke rotate hash generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l allow -d 'Tag expression or comma-separated model list the key may reach (e.g. `tag:free`)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l rpm -d 'Requests per minute' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l tpm -d 'Tokens (input + output, as recorded) per minute' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l max-parallel -d 'Requests at the same time (streams count until they end)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l budget -d 'Spend allowed per period, USD (needs --per)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l per -d 'The budget\'s period, in server.timezone: day, week (from Monday), month or total' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l expires -d 'When the key stops working: a date (valid through that day), an RFC 3339 time, or a duration (30d, 12h)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l note -d 'A note for people (who has it, what for)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -l json -d 'Print JSON (with the secret)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from list" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from show" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from show" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l allow -d 'Tag expression or comma-separated model list the key may reach (e.g. `tag:free`)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l rpm -d 'Requests per minute' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l tpm -d 'Tokens (input + output, as recorded) per minute' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l max-parallel -d 'Requests at the same time (streams count until they end)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l budget -d 'Spend allowed per period, USD (needs --per)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l per -d 'The budget\'s period, in server.timezone: day, week (from Monday), month or total' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l expires -d 'When the key stops working: a date (valid through that day), an RFC 3339 time, or a duration (30d, 12h)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l note -d 'A note for people (who has it, what for)' -r
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from update" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from disable" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from disable" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from disable" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from disable" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from enable" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from enable" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from enable" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from enable" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -l yes -d 'Do not ask'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from hash" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from hash" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from hash" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from hash" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from generate" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from generate" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from generate" -l json -d 'Print JSON'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from generate" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a store key; prints its secret once (only its hash is stored)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every key (configuration and store) with its limits, spend in the budget period, requests today, last use'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "show" -d 'One key in detail'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "update" -d 'Change a store key\'s settings (`none` removes a limit; `--allow \'\'` removes the allow expression)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Stop accepting a store key until `enable`'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Accept a disabled store key again'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Refuse a store key for good (its history stays); asks first unless --yes'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'A new secret for a store key: same name, settings and history; the old secret stops working'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "hash" -d 'Print `sha256:<hex>` of a gateway key (read from standard input when not given)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Make a new random gateway key and print it with its hash (for `server.keys` in the configuration)'
complete -c router -n "__fish_router_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -f -a "test" -d 'Send a sample alert to each webhook target (exit 1 when any did not accept it)'
complete -c router -n "__fish_router_using_subcommand alerts; and not __fish_seen_subcommand_from test help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from test" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from test" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from test" -l json -d 'Print the results as JSON'
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "test" -d 'Send a sample alert to each webhook target (exit 1 when any did not accept it)'
complete -c router -n "__fish_router_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand generate" -l out-dir -d 'The repository root: writes completions/ and man/ below it' -r -F
complete -c router -n "__fish_router_using_subcommand generate" -l config -d 'Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml)' -r -F
complete -c router -n "__fish_router_using_subcommand generate" -l store -d 'Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb)' -r -F
complete -c router -n "__fish_router_using_subcommand generate" -s h -l help -d 'Print help'
complete -c router -n "__fish_router_using_subcommand generate" -s V -l version -d 'Print version'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "serve" -d 'Run the proxy'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "config" -d 'Check and summarise the configuration'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "balance" -d 'Upstream credit per channel and key'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "channels" -d 'List, show, add, enable, disable and remove channels (store channels; YAML ones read-only)'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "import" -d 'Import channels from another gateway\'s database'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "test" -d 'Check endpoints, keys, models and routes end to end (exit 1 when anything failed)'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "usage" -d 'Token and cost totals from the store, grouped by day, channel, endpoint, token, model or key'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "requests" -d 'Recent request records; `requests show ID` for one with every attempt'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "store" -d 'Store maintenance: save the records a server could not write (`store import-pending FILE`)'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "discover" -d 'Ask every channel\'s keys which models they reach, and their prices'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "tags" -d 'List tags, or show the candidates a model name or tag expression routes to'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "keys" -d 'Gateway keys: create, list with spend, update, disable, revoke, rotate; hash or generate one for the config'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "alerts" -d 'Webhook alerts: send a sample to each target'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "generate" -d 'Write shell completions and man pages (used to refresh completions/ and man/)'
complete -c router -n "__fish_router_using_subcommand help; and not __fish_seen_subcommand_from serve config balance channels import test usage requests store discover tags keys alerts generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate the configuration and print what it defines'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from balance" -f -a "check" -d 'Ask each upstream key\'s provider for the credit left (exit 3 when any is below --below)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from balance" -f -a "history" -d 'Show past balance checks'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "list" -d 'List every channel: from the configuration file (read-only) and from the store'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "show" -d 'One channel in detail (keys as token names and fingerprints only)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "enable" -d 'Enable a store channel'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "disable" -d 'Disable a store channel (requests no longer go to it)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "remove" -d 'Remove a store channel'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from channels" -f -a "add" -d 'Add a store channel (asks for each field when run on a terminal without flags)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "oneapi" -d 'Import channels from a One-API or New-API database (SQLite file, mysql:// or postgres:// URL)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from requests" -f -a "show" -d 'One request with every upstream attempt'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "import-pending" -d 'Save the request records of pending files into the store (the files `serve` wrote when the store could not take them), then remove each file'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "migrate" -d 'Copy a redb store (records, rollups, channels, keys, balances, discovery) into PostgreSQL, for `store.postgres`. Safe to run again: what is there already is not counted twice. Stop the `router serve` that holds the file first'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from tags" -f -a "list" -d 'Every tag, with how many models carry it and on which channels'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from tags" -f -a "query" -d 'The ordered candidates for a model name or tag expression, exactly as `serve` would try them'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "create" -d 'Create a store key; prints its secret once (only its hash is stored)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "list" -d 'Every key (configuration and store) with its limits, spend in the budget period, requests today, last use'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "show" -d 'One key in detail'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "update" -d 'Change a store key\'s settings (`none` removes a limit; `--allow \'\'` removes the allow expression)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "disable" -d 'Stop accepting a store key until `enable`'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "enable" -d 'Accept a disabled store key again'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "revoke" -d 'Refuse a store key for good (its history stays); asks first unless --yes'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "rotate" -d 'A new secret for a store key: same name, settings and history; the old secret stops working'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "hash" -d 'Print `sha256:<hex>` of a gateway key (read from standard input when not given)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "generate" -d 'Make a new random gateway key and print it with its hash (for `server.keys` in the configuration)'
complete -c router -n "__fish_router_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "test" -d 'Send a sample alert to each webhook target (exit 1 when any did not accept it)'
