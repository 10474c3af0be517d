-- ods_image_index: one row per img2dataset result row, from every configured output folder.
-- image_suffix is the real type read from the image bytes (img2dataset names them all .jpg).
with source as (

    select * from src_image_index

),

final as (

    select
        laion_hash(url, caption) as hash,
        source_hash,
        key,
        url,
        caption,
        status,
        error_message,
        width,
        height,
        original_width,
        original_height,
        sha256,
        output_format,
        image_path,
        image_suffix,
        folder,
        file_name
    from source

)

select * from final
