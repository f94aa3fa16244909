"""--push_to_hub checks the token and creates the repository before training (loopback Hub server)."""

from __future__ import annotations

import json
import textwrap


def test_push_to_hub_checks_token_and_creates_the_repo_before_training(hub_client, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, os
        token = os.environ.pop("HF_TOKEN")
        from snd.distill import ConfigError, run
        from snd.distill.launch import preflight_push
        try:
            run(output_dir={str(tmp_path / 'run')!r}, push_to_hub="snd-test/early", progress=False)
        except ConfigError as error:
            no_token = str(error)
        url = preflight_push("snd-test/early", token=token)
        try:
            preflight_push("snd-test/other", token="hf_wrong_token")
        except ConfigError as error:
            wrong = str(error)
        print(json.dumps(dict(no_token=no_token, url=url, wrong=wrong)))
        """
    )
    result = json.loads(hub_client.run(["-c", script]).stdout.strip().splitlines()[-1])
    assert "no Hugging Face token" in result["no_token"] and "snd-test/early" in result["no_token"]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    assert hub_client.server.store.exists("model", "snd-test/early")
    assert "rejected the token" in result["wrong"]
    assert not hub_client.server.store.exists("model", "snd-test/other")
