"""The JSON bodies the endpoints accept (pydantic): strict types, unknown fields refused except
where OpenAI clients send extra ones."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_TOP_K = 50


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Texts = Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]]


class TextPair(Strict):
    text: StrictStr
    text_pair: StrictStr


class QAInput(Strict):
    question: StrictStr
    context: StrictStr


class EmbeddingsRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, dimensions...): accepted and ignored.
    input: Texts
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"


class FillMaskRequest(Strict):
    input: Texts
    model: StrictStr | None = None
    top_k: StrictInt = Field(5, ge=1, le=MAX_TOP_K)


class NextSentenceRequest(Strict):
    input: Union[TextPair, Annotated[list[TextPair], Field(min_length=1)]]
    model: StrictStr | None = None


class ClassifyRequest(Strict):
    input: Union[StrictStr, TextPair, Annotated[list[Union[StrictStr, TextPair]], Field(min_length=1)]]
    model: StrictStr | None = None


class NerRequest(Strict):
    input: Texts
    model: StrictStr | None = None


class QARequest(Strict):
    input: Union[QAInput, Annotated[list[QAInput], Field(min_length=1)]]
    model: StrictStr | None = None


class AttentionRequest(Strict):
    input: StrictStr
    model: StrictStr | None = None
    layer: StrictInt | None = None
    head: StrictInt | None = None


class TokenizeRequest(Strict):
    input: Texts
    model: StrictStr | None = None
