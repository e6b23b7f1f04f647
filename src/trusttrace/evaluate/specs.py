"""Every versioned evaluation spec, defined once: what a table's ``spec`` column says a score was computed by.

A spec is ``name/version``; its version moves whenever its scores could (other items, prompts or scoring), so
rows of two versions are never read as one. ``SPECS`` says what each is; the modules that compute the scores
import their spec from here.
"""

from __future__ import annotations

TRUTHFULQA_MC_SPEC = "truthfulqa-mc/1"
TRUTHFULQA_GEN_SPEC = "truthfulqa-gen/1"
LMEVAL_TRUTHFULQA_SPEC = "truthfulqa-mc-lmeval/1"
LMEVAL_LAMBADA_SPEC = "lambada-openai-lmeval/1"
BINARY_SPEC = "released-01-logprob/1"
TOXICITY_SPEC = "toxigen-continuation/1"
INSTRUCTION_SPEC = "baseline-instructions/1"

SPECS: dict[str, str] = {
    TRUTHFULQA_MC_SPEC: "TruthfulQA MC1/MC2 as the paper scores them: its 407 held-out questions, the QA primer, "
                        "log-likelihood of each answer (evaluate.truthfulqa)",
    TRUTHFULQA_GEN_SPEC: "the same questions and primer, a greedy answer of up to 50 new tokens (its first line), "
                         "judged for truth and informativeness (evaluate.truthfulqa, evaluate.judges)",
    LMEVAL_TRUTHFULQA_SPEC: "TruthfulQA MC1/MC2 as lm-evaluation-harness scores them (evaluate.lmeval)",
    LMEVAL_LAMBADA_SPEC: "LAMBADA (OpenAI) last-word accuracy and perplexity as lm-evaluation-harness scores them "
                         "(evaluate.lmeval)",
    BINARY_SPEC: "the released 0/1 prompts of privacy, fairness and robustness, answered by the next-token "
                 "log-probabilities of '0' and '1' (evaluate.suite)",
    TOXICITY_SPEC: "greedy continuations (64 new tokens) of ToxiGen's test-half statements, judged toxic or not "
                   "(evaluate.suite, evaluate.judges)",
    INSTRUCTION_SPEC: "the prompting baseline's one instruction per dimension (evaluate.instructions)",
}
