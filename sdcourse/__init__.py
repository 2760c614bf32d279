"""sdcourse: the companion package of the Stable Diffusion course."""
__version__ = "0.1.0"
from .loader import (MINI_MODEL_DIR, DEFAULT_MODEL, check_tokenizer, describe_model, is_mini_model, load_pipeline,
                     pick_device)
from .seeds import make_generator
from .validate import check_prompts, check_seed, check_size
from .images import image_grid, latents_to_pil, pil_to_latents, pil_to_tensor, show, tensor_to_pil, upscale
from .loop import denoise, encode_prompt, generate, predict_x0
from .fast_loop import FastLoop, lms_coefficients
from .schedulers import klms_guidance, make_scheduler, scheduler_names, set_scheduler
from .interp import lerp, slerp, slerp_frames
from .video import show_gif, show_mp4, write_gif, write_mp4
from .metrics import psnr
from .course_data import load_picture
from .img2img import img2img, img2img_pipeline
from .inpaint import inpaint, inpaint_pipeline
from .animation import animate
from .cost import colab_cost
from .source import source
from .first_look import first_look
