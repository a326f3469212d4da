import numpy as np
import pytest
import torch

from adaptive_inference.decision import LinearDecision, decision_features, time_decision
from adaptive_inference.extraction import confidence_features


def test_decision_features_match_the_extracted_ones():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    features = decision_features(logits, topk=5)
    extracted = confidence_features(logits.softmax(1), topk=5)
    torch.testing.assert_close(features[:, :5], extracted["top_p"])
    torch.testing.assert_close(features[:, 5], extracted["margin"])
    torch.testing.assert_close(features[:, 6], extracted["entropy"])


def test_linear_decision_is_the_standardised_linear_rule():
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(1))
    mean, scale = torch.rand(7), torch.rand(7) + 0.5
    coef = torch.randn(7)
    rule = LinearDecision(mean, scale, coef, -0.2, topk=5)
    x = decision_features(logits, 5).numpy()
    expected = ((x - mean.numpy()) / scale.numpy()) @ coef.numpy() - 0.2 > 0
    np.testing.assert_array_equal(rule(logits).numpy(), expected)


def test_time_decision_reports_per_example_cost():
    result = time_decision(num_classes=10, topk=5, batch_size=8, warmup=1, iterations=5, device=torch.device("cpu"))
    assert result["median_ms"] > 0 and result["iqr_ms"] >= 0
    assert result["per_example_ms"] == pytest.approx(result["median_ms"] / 8)
