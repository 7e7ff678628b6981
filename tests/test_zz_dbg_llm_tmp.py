import core.llm as m
def test_x():
    ll = m._litellm()
    print(ll.get_llm_provider(model='ollama/llama3'))
    try:
        print(ll.supports_response_schema(model='ollama/llama3', custom_llm_provider='ollama'))
    except Exception as e: print("SRS", repr(e))
    try:
        print(ll.get_supported_openai_params(model='llama3', custom_llm_provider='ollama'))
        print(ll.get_supported_openai_params(model='ollama/llama3', custom_llm_provider='ollama'))
    except Exception as e: print("GSOP", repr(e))
    assert 0
