"""Zero-shot multiple choice on MSRVTT-MC (5 candidate captions per video) with tasks/retrieval_mc.py."""

_base_ = "../../exp_zs/msrvtt/config.py"

test_file = dict(mc_test="${available_corpus.msrvtt_mc_test}")
test_types = ["mc_test"]
stop_key = "mc_test/"
