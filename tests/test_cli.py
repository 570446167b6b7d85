def test_tm(trained_model):
    assert trained_model.is_file()
