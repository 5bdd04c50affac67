# Shared by the video_mm experiment scripts (exp_*/*/run.sh); source it, then call
#   video_mm_launch TASK CONFIG [key value ...]
# TASK is pretrain, retrieval, retrieval_mc or vqa. The data, checkpoint and output folders become
# config overrides, from the environment when set:
#   DATA_DIR   annotations and media (default <repo>/data/video_mm; layout in configs/data.py)
#   MODEL_DIR  released checkpoints, vit_b16.pth, bert-base-uncased/ (default $VIDEOMAMBA_CHECKPOINTS
#              or <repo>/checkpoints)
#   OUTPUT_DIR the run's folder (default: output/ beside the config)
#   PRETRAINED_PATH, VISION_PRETRAINED  when set, replace the config's pretrained_path (video-text
#              checkpoint) and model.vision_encoder.pretrained; set empty, the run starts without it
# Further `key value` pairs are appended, so they win. Processes are started by tools/launch.sh
# (srun inside a Slurm allocation, torchrun for GPUS > 1, else one python process).

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools" && pwd)/launch.sh"

video_mm_launch() {
    local task="$1" config="$2"
    shift 2
    local -a checkpoints=()
    if [[ -n "${PRETRAINED_PATH+set}" ]]; then checkpoints+=(pretrained_path "$PRETRAINED_PATH"); fi
    if [[ -n "${VISION_PRETRAINED+set}" ]]; then checkpoints+=(model.vision_encoder.pretrained "$VISION_PRETRAINED"); fi
    videomamba_launch "$VIDEOMAMBA_ROOT/videomamba/video_mm/tasks/$task.py" "$config" \
        data_dir "${DATA_DIR:-$VIDEOMAMBA_ROOT/data/video_mm}" \
        model_dir "${MODEL_DIR:-${VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}}" \
        output_dir "${OUTPUT_DIR:-$(dirname "$config")/output}" \
        "${checkpoints[@]}" \
        "$@"
}
