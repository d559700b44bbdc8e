# shellcheck shell=bash
# ====== How the stages run their jobs ======
# Stage scripts run jobs through these commands, Kaldi style:
#   ${decode_cmd} --gpu 0 JOB=1:4 exp/x/log/infer.JOB.log python -m some.module --job JOB ...
#   python -m espnet2.bin.launch --cmd "${cuda_cmd} --name train" --log exp/x/train.log --ngpu 1 -- ...
# Options: --gpu N, --num_threads N, --mem X, --time X, --num_nodes N, --max-jobs-run N,
# --name X, --config F; a later option wins, so a stage can override the defaults set here.
# Options of other job backends (--queue X, -q X, -l X, -V, ...) are ignored with a note.
#
# Choose the backend with the CMD_BACKEND environment variable (or edit the default below):
#   local  utils/run.pl: runs the jobs on this machine, at most one per CPU at once (one per GPU
#          with --gpu > 0) unless --max-jobs-run N; --mem/--time/--name are ignored and no GPU is
#          assigned (set CUDA_VISIBLE_DEVICES).
#   slurm  utils/slurm.pl: submits to Slurm with sbatch (job arrays for JOB=a:b) and waits.
#          conf/slurm.conf maps the options to sbatch arguments in Kaldi's format, as the
#          conf/slurm.conf of ESPnet and Kaldi recipes (copy your cluster's one there):
#            command sbatch --export=PATH        the submit command
#            option gpu=* -p gpu --gres=gpu:$0   --gpu N -> these arguments ($0 = N)
#            option gpu=0 -p cpu                 --gpu 0 -> these (wins over the * line)
#            default time=24:00:00               the value when a stage does not give --time
#          Options it does not describe: --gpu N -> --gres=gpu:N, --num_threads -> --cpus-per-task,
#          --mem, --time, --num_nodes -> --nodes.  The older "key value" lines (mem 8G,
#          sbatch_gpu --partition=gpu, ...) are still read.  Batch scripts go to <logdir>/q/.
# e.g. CMD_BACKEND=slurm ./run.sh --stage 4
cmd_backend=${CMD_BACKEND:-local}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/run.pl"
        export cuda_cmd="utils/run.pl"
        export decode_cmd="utils/run.pl"
        ;;
    slurm)
        export train_cmd="utils/slurm.pl --config conf/slurm.conf"
        # One GPU unless the caller says otherwise (espnet2.bin.launch appends --gpu <ngpu>).
        export cuda_cmd="utils/slurm.pl --config conf/slurm.conf --gpu 1"
        export decode_cmd="utils/slurm.pl --config conf/slurm.conf"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (from CMD_BACKEND); expected one of: local, slurm" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac
