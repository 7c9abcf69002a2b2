# bash completion for petitiond(8): commands, their action words, flags, and
# the values of the flags that take a fixed set.
#
# Install (as root):
#   install -D -m 0644 deploy/petitiond.bash /usr/share/bash-completion/completions/petitiond
# or, for one user, source it from ~/.bashrc.

_petitiond() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local prev=${COMP_WORDS[COMP_CWORD-1]}
	local commands="serve check-config tail stats batches held pause resume lookup erase health backup restore dkim-keygen demo version"
	local admin="-config -admin -json -h -version"
	COMPREPLY=()

	if [[ $COMP_CWORD -eq 1 ]]; then
		COMPREPLY=($(compgen -W "$commands -h -version" -- "$cur"))
		return
	fi
	local cmd=${COMP_WORDS[1]}

	# The value of the flag just typed.
	case $prev in
	-config | -out | -in)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	-dir)
		COMPREPLY=($(compgen -d -- "$cur"))
		return
		;;
	-algo)
		COMPREPLY=($(compgen -W "ed25519 rsa" -- "$cur"))
		return
		;;
	-reason)
		if [[ $cmd == held ]]; then
			COMPREPLY=($(compgen -W "unverified postmaster unbatchable forward_failed" -- "$cur"))
		fi
		return
		;;
	-admin | -n | -domain | -selector | -letters)
		return
		;;
	esac

	local flags actions=""
	case $cmd in
	serve | check-config) flags="-config -h -version" ;;
	tail) flags="$admin -f -n" ;;
	stats | resume | health | lookup | erase) flags="$admin" ;;
	batches)
		flags="$admin"
		actions="show export retry flush"
		;;
	held)
		flags="$admin -all -reason"
		actions="show release drop"
		;;
	pause) flags="$admin -reason" ;;
	backup) flags="$admin -out" ;;
	restore) flags="-config -check -in -json -h -version" ;;
	dkim-keygen) flags="-domain -selector -algo -out -h -version" ;;
	demo) flags="-letters -keep -exit -dir -v -h -version" ;;
	version) flags="-json -h -version" ;;
	*) return ;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		return
	fi
	# An action word, unless one was given already.
	if [[ -n $actions ]]; then
		local i
		for ((i = 2; i < COMP_CWORD; i++)); do
			if [[ " $actions " == *" ${COMP_WORDS[i]} "* ]]; then
				return
			fi
		done
		COMPREPLY=($(compgen -W "$actions" -- "$cur"))
	fi
}

complete -F _petitiond petitiond
