"""Open-ended video QA on MSRVTT-QA with tasks/vqa.py, from a released video-text checkpoint.

The answer decoder starts from the top (fusion) layers of the text encoder; answers are ranked
from the answer list (``answer_mode rank``) or decoded greedily (``answer_mode generate``).
"""

_base_ = "../../exp_zs/msrvtt/config.py"

train_file = "${available_corpus.msrvtt_qa_train}"
test_file = dict(val="${available_corpus.msrvtt_qa_val}", test="${available_corpus.msrvtt_qa_test}")
test_types = ["val", "test"]
stop_key = "val/"
answer_list = "${msrvtt_qa_answer_list}"
answer_mode = "rank"
max_q_len = 25
max_a_len = 5
model = dict(model_cls="UMT_QA_VIDEOMAMBA", text_decoder_layers=0)  # 0: as many as the fusion layers
criterion = dict(loss_weight=dict(vtc=0.0, vtm=0.0))
optimizer = dict(lr=2e-5, weight_decay=0.02)
scheduler = dict(epochs=5, warmup_epochs=0.5)
evaluate = False
output_dir = None
