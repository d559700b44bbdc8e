# shellcheck shell=bash
# ====== How the stages run their jobs ======
# Stage scripts run jobs through these commands, Kaldi style:
#   ${decode_cmd} --gpu 0 JOB=1:4 exp/x/log/infer.JOB.log python -m some.module --job JOB ...
#   python -m espnet2.bin.launch --cmd "${cuda_cmd} --name train" --log exp/x/train.log --ngpu 1 -- ...
# Options: --gpu N, --num_threads N, --mem X, --time X, --num_nodes N, --max-jobs-run N,
# --name X, --config F; a later option wins, so a stage can override the defaults set here.
#
# Choose the backend with the CMD_BACKEND environment variable (or edit the default below):
#   local  utils/run.pl: runs the jobs on this machine, all at once unless --max-jobs-run;
#          --mem/--time/--name are ignored and no GPU is assigned (set CUDA_VISIBLE_DEVICES).
#   slurm  utils/slurm.pl: submits to Slurm with sbatch (job arrays for JOB=a:b) and waits;
#          --gpu N -> --gres=gpu:N, --num_threads -> --cpus-per-task, --mem, --time,
#          --num_nodes -> --nodes.  Batch scripts go to <logdir>/q/.
#          conf/slurm.conf holds the cluster's defaults, one "key value" per line:
#            <option> <value>   default of a slurm.pl option, e.g. "mem 8G", "time 2-00:00:00"
#            sbatch <args>      sbatch arguments for every job, e.g. "sbatch --account=myproj"
#            sbatch_gpu <args>  only for jobs with --gpu > 0, e.g. "sbatch_gpu --partition=gpu"
#            sbatch_cpu <args>  only for jobs without GPUs, e.g. "sbatch_cpu --partition=cpu"
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
