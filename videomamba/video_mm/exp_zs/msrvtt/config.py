"""Zero-shot text-video retrieval on MSRVTT-1K with a released video-text checkpoint (25M by default).

Run through tasks/retrieval.py with ``evaluate True``; with ``evaluate False`` the same config
fine-tunes on the 9K training split (VTC + VTM, 2 epochs). The other exp_zs configs inherit this one.
"""

_base_ = "../../configs/base.py"

train_file = "${available_corpus.msrvtt_ret_train9k}"
test_file = dict(test="${available_corpus.msrvtt_ret_test1k}")
test_types = ["test"]
stop_key = "test/"

optimizer = dict(lr=1e-5, weight_decay=0.02)
scheduler = dict(epochs=2, warmup_epochs=0.2)
evaluate = True
pretrained_path = "${model_dir}/videomamba_m16_25M_f8_res224.pth"
